#!/usr/bin/env node
// bin/reapi-build-script without `reapi cargo` around it: one build script on the fleet, in this
// process (loads only the client, not the server roles).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../clients/cargo/standalone.ts');
await main(process.argv.slice(2));
