#!/usr/bin/env node
// The `reapi` command. Sources are TypeScript run through tsx, so a checkout works after `npm ci`
// with no build step.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
