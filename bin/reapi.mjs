#!/usr/bin/env node
// The `reapi` command. Runs the JavaScript that scripts/build.sh compiled into dist/ (`npm start`
// and `npm test` build it), which starts several times faster than compiling the TypeScript on the
// fly; while a source is newer than that build (someone is editing), runs the sources through tsx.
import { runCompiledOrSources } from './launch.mjs';

await runCompiledOrSources('cli/main');
