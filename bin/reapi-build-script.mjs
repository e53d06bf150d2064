#!/usr/bin/env node
// bin/reapi-build-script without `reapi cargo` around it: one build script on the fleet, in this
// process (loads only the client, not the server roles).
import { runCompiledOrSources } from './launch.mjs';

const { main } = await runCompiledOrSources('clients/cargo/standalone');
await main(process.argv.slice(2));
