// The client half of `reapi cargo`'s build-script helper: Cargo runs a build script, the trampoline
// (bin/reapi-build-script) runs this with the real binary as argv[2]. It hands the binary path,
// arguments, working directory and environment to the `reapi cargo` process over its Unix socket
// (REAPI_CARGO_SOCKET), which runs the script on the fleet (clients/cargo/daemon.ts), then replays
// stdout, stderr and the exit code. Plain JavaScript with node: imports only, so that it starts in
// a few tens of milliseconds: it runs once per build script.
import { connect } from 'node:net';

const [binary, ...args] = process.argv.slice(2);
const socketPath = process.env.REAPI_CARGO_SOCKET ?? '';
const crate = `${process.env.CARGO_PKG_NAME ?? 'unknown'} v${process.env.CARGO_PKG_VERSION ?? '?'}`;
// `reapi cargo` starts cargo before its helper listens: wait for the socket a while.
const WAIT_MS = 60_000;
const started = Date.now();

function attempt() {
  const socket = connect(socketPath);
  let reply = '';
  socket.setEncoding('utf8');
  socket.on('connect', () => socket.write(JSON.stringify({ binary, args, cwd: process.cwd(), env: process.env }) + '\n'));
  socket.on('data', (chunk) => (reply += chunk));
  socket.on('error', (err) => {
    if ((err.code === 'ENOENT' || err.code === 'ECONNREFUSED') && reply === '' && Date.now() - started < WAIT_MS) {
      setTimeout(attempt, 25);
      return;
    }
    process.stderr.write(`reapi: build script of ${crate}: cannot reach the \`reapi cargo\` process at ${socketPath}: ${err.message}\n`);
    process.exitCode = 1;
  });
  socket.on('end', () => {
    let r;
    try {
      r = JSON.parse(reply);
    } catch {
      process.stderr.write(`reapi: build script of ${crate}: the \`reapi cargo\` process answered nothing usable\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(Buffer.from(r.stdout, 'base64'));
    process.stderr.write(Buffer.from(r.stderr, 'base64'));
    process.exitCode = r.exitCode;
  });
}
attempt();
