// A minimal ByteStream server on plain grpc-js, for the transport ceiling: Write hashes the bytes
// (the least a CAS must do) and drops them; Read streams the requested size from one buffer in
// 1 MiB messages. Same grpc-js, same client, no storage code, so
// "reapi / sink" is the share of throughput the server's own code keeps.
//
// Run as a child process by the benchmarks (see `startSink` in storage.ts); prints the same
// `listening grpc=N http=0` line as `reapi serve`.
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { services, type ByteStreamHandlers } from '../protos/index.ts';

const READ_CHUNK = 1024 * 1024;
const block = Buffer.alloc(READ_CHUNK, 0x5a);

const handlers: ByteStreamHandlers = {
  Write: (call, callback) => {
    const hash = createHash('sha256');
    let received = 0;
    call.on('data', (req: { data: Buffer }) => {
      hash.update(req.data);
      received += req.data.length;
    });
    call.on('end', () => {
      hash.digest();
      callback(null, { committed_size: received });
    });
    call.on('error', () => {});
  },
  Read: (call) => {
    // The size is the last path segment of .../blobs/{hash}/{size}.
    const size = Number(call.request.resource_name.split('/').pop());
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        const n = Math.min(READ_CHUNK, size - sent);
        sent += n;
        if (!call.write({ data: n === READ_CHUNK ? block : block.subarray(0, n) })) {
          call.once('drain', pump);
          return;
        }
      }
      call.end();
    };
    call.on('cancelled', () => {
      sent = size;
    });
    pump();
  },
  QueryWriteStatus: (_call, callback) => callback(null, { committed_size: 0, complete: false }),
};

const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024, 'grpc.max_send_message_length': 64 * 1024 * 1024 });
server.addService(services.ByteStream.service, handlers as grpc.UntypedServiceImplementation);
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`grpc-sink: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`reapi sink listening grpc=${port} http=0\n`);
});
process.once('SIGTERM', () => server.forceShutdown());
