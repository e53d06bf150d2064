import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  decode,
  encode,
  messageType,
  packageDefinition,
  packAny,
  root,
  serviceDefinitions,
  services,
  unpackAny,
  type CapabilitiesHandlers,
  type MessageOutput,
} from '../../protos/index.ts';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Length-delimited field: tag byte (field<<3|2), one-byte varint length, payload. */
function ld(field: number, payload: Buffer): Buffer {
  assert.ok(payload.length < 128);
  return Buffer.concat([Buffer.from([(field << 3) | 2, payload.length]), payload]);
}

describe('protos: services', () => {
  const expected: Record<keyof typeof services, { pkg: string; methods: Record<string, [boolean, boolean]> }> = {
    Capabilities: { pkg: 'build.bazel.remote.execution.v2', methods: { GetCapabilities: [false, false] } },
    ContentAddressableStorage: {
      pkg: 'build.bazel.remote.execution.v2',
      methods: {
        FindMissingBlobs: [false, false],
        BatchUpdateBlobs: [false, false],
        BatchReadBlobs: [false, false],
        GetTree: [false, true],
        SplitBlob: [false, false],
        SpliceBlob: [false, false],
      },
    },
    ActionCache: {
      pkg: 'build.bazel.remote.execution.v2',
      methods: { GetActionResult: [false, false], UpdateActionResult: [false, false] },
    },
    Execution: { pkg: 'build.bazel.remote.execution.v2', methods: { Execute: [false, true], WaitExecution: [false, true] } },
    Fetch: { pkg: 'build.bazel.remote.asset.v1', methods: { FetchBlob: [false, false], FetchDirectory: [false, false] } },
    Push: { pkg: 'build.bazel.remote.asset.v1', methods: { PushBlob: [false, false], PushDirectory: [false, false] } },
    ByteStream: {
      pkg: 'google.bytestream',
      methods: { Read: [false, true], Write: [true, false], QueryWriteStatus: [false, false] },
    },
    Operations: {
      pkg: 'google.longrunning',
      methods: {
        ListOperations: [false, false],
        GetOperation: [false, false],
        DeleteOperation: [false, false],
        CancelOperation: [false, false],
        WaitOperation: [false, false],
      },
    },
  };

  for (const [name, spec] of Object.entries(expected) as [keyof typeof services, (typeof expected)[keyof typeof services]][]) {
    it(`${name} loads with the expected methods`, () => {
      assert.equal(typeof services[name], 'function', 'client constructor');
      const def = serviceDefinitions[name] as unknown as Record<string, { path: string; requestStream: boolean; responseStream: boolean }>;
      assert.deepEqual(Object.keys(def).sort(), Object.keys(spec.methods).sort());
      for (const [method, [reqStream, resStream]] of Object.entries(spec.methods)) {
        const m = def[method];
        assert.ok(m);
        assert.equal(m.path, `/${spec.pkg}.${name}/${method}`);
        assert.equal(m.requestStream, reqStream, `${method} requestStream`);
        assert.equal(m.responseStream, resStream, `${method} responseStream`);
      }
    });
  }

  it('serves and calls Capabilities over loopback gRPC', async () => {
    const server = new grpc.Server();
    const handlers: CapabilitiesHandlers = {
      GetCapabilities: (call, cb) => {
        cb(null, {
          cache_capabilities: { digest_functions: ['SHA256'], max_batch_total_size_bytes: 4 << 20 },
          high_api_version: { major: 2, minor: 3 },
          low_api_version: { major: 2 },
          deprecated_api_version: call.request.instance_name === 'x' ? { major: 2 } : null,
        });
      },
    };
    server.addService(serviceDefinitions.Capabilities, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const client = new services.Capabilities(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const caps = await new Promise<MessageOutput<'ServerCapabilities'>>((resolve, reject) =>
        client.GetCapabilities({ instance_name: 'x' }, { deadline: Date.now() + 5000 }, (err, r) =>
          err || !r ? reject(err ?? new Error('no response')) : resolve(r),
        ),
      );
      assert.deepEqual(caps.cache_capabilities?.digest_functions, ['SHA256']);
      assert.equal(caps.cache_capabilities?.max_batch_total_size_bytes, 4 << 20);
      assert.equal(caps.cache_capabilities?.split_blob_support, false);
      assert.equal(caps.high_api_version?.minor, 3);
      assert.deepEqual(caps.deprecated_api_version, { major: 2, minor: 0, patch: 0, prerelease: '' });
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it('google.rpc.Code and well-known types load', () => {
    assert.equal(root.lookupEnum('google.rpc.Code').values.UNAUTHENTICATED, 16);
    for (const t of ['Any', 'Duration', 'Timestamp', 'UInt32Value', 'Empty']) {
      assert.ok(root.lookupType(`google.protobuf.${t}`));
    }
  });
});

describe('protos: canonical encoding', () => {
  it('empty Directory encodes to 0 bytes (the well-known empty digest)', () => {
    const b = encode('Directory', {});
    assert.equal(b.length, 0);
    assert.equal(sha256(b), EMPTY_SHA256);
    // Explicit empties and defaults must not change that.
    assert.equal(encode('Directory', { files: [], directories: [], symlinks: [], node_properties: null }).length, 0);
  });

  it('explicit is_executable:false encodes byte-identical to omitting it', () => {
    const digest = { hash: EMPTY_SHA256, size_bytes: 0 };
    const a = encode('Directory', { files: [{ name: 'a', digest, is_executable: false }] });
    const b = encode('Directory', { files: [{ name: 'a', digest }] });
    assert.deepEqual(a, b);
    // And it differs once the bit is really set.
    assert.notDeepEqual(encode('Directory', { files: [{ name: 'a', digest, is_executable: true }] }), b);
  });

  it('Directory with one FileNode matches the hand-computed wire bytes', () => {
    const got = encode('Directory', {
      files: [{ name: 'a', digest: { hash: EMPTY_SHA256, size_bytes: 0 }, is_executable: false }],
    });
    // Digest{hash=1:"e3b0...", size_bytes=2 omitted (0)}
    const digest = ld(1, Buffer.from(EMPTY_SHA256, 'ascii'));
    // FileNode{name=1:"a", digest=2:Digest}
    const fileNode = Buffer.concat([ld(1, Buffer.from('a')), ld(2, digest)]);
    // Directory{files=1:[FileNode]}
    const want = ld(1, fileNode);
    assert.equal(want.length, 73);
    assert.equal(got.toString('hex'), want.toString('hex'));
    assert.equal(
      want.subarray(0, 9).toString('hex'),
      '0a470a01611242' + '0a40', // files(71) name"a" digest(66) hash(64)
    );
  });

  it('omits defaults recursively but keeps explicitly set (empty) messages', () => {
    const withDefaults = encode('Action', {
      command_digest: { hash: 'c', size_bytes: 0 },
      input_root_digest: { hash: 'd', size_bytes: 1 },
      do_not_cache: false,
      salt: Buffer.alloc(0),
      timeout: { seconds: 0, nanos: 0 },
    });
    const without = encode('Action', {
      command_digest: { hash: 'c' },
      input_root_digest: { hash: 'd', size_bytes: 1 },
      timeout: {},
    });
    assert.deepEqual(withDefaults, without);
    // timeout (field 6) is present with zero length: 0x32 0x00 at the end.
    assert.equal(without.subarray(-2).toString('hex'), '3200');
  });

  it('omits default enums given as names or numbers, keeps oneof members', () => {
    assert.equal(encode('Command', { output_directory_format: 'TREE_ONLY', arguments: [] }).length, 0);
    assert.equal(encode('Command', { output_directory_format: 0 }).length, 0);
    assert.equal(encode('Command', { output_directory_format: 'DIRECTORY_ONLY' }).toString('hex'), '4801');
    // Operation.error is in a oneof: an empty Status stays present.
    assert.equal(encode('Operation', { error: {} }).toString('hex'), '2200');
    // Repeated strings keep empty elements.
    assert.equal(encode('Command', { arguments: [''] }).toString('hex'), '0a00');
  });

  it('writes fields in field-number order regardless of object key order', () => {
    const a = encode('Command', { working_directory: 'w', output_paths: ['o'], arguments: ['x'] });
    const b = encode('Command', { arguments: ['x'], output_paths: ['o'], working_directory: 'w' });
    assert.deepEqual(a, b);
    // arguments(1), working_directory(6), output_paths(7)
    assert.equal(a.toString('hex'), '0a0178' + '320177' + '3a016f');
  });
});

describe('protos: round trips', () => {
  it('Action', () => {
    const action = {
      command_digest: { hash: 'a'.repeat(64), size_bytes: 123 },
      input_root_digest: { hash: 'b'.repeat(64), size_bytes: 456 },
      timeout: { seconds: 60, nanos: 5 },
      do_not_cache: true,
      salt: Buffer.from('salt'),
      platform: { properties: [{ name: 'OSFamily', value: 'Linux' }] },
    };
    const out = decode('Action', encode('Action', action));
    assert.deepEqual(out.command_digest, action.command_digest);
    assert.deepEqual(out.input_root_digest, action.input_root_digest);
    assert.deepEqual(out.timeout, { seconds: 60, nanos: 5 });
    assert.equal(out.do_not_cache, true);
    assert.deepEqual(out.salt, Buffer.from('salt'));
    assert.deepEqual(out.platform, { properties: [{ name: 'OSFamily', value: 'Linux' }] });
    // Re-encoding the decoded (defaults-filled) object gives the same bytes.
    assert.deepEqual(encode('Action', out), encode('Action', action));
  });

  it('Command', () => {
    const cmd = {
      arguments: ['/bin/sh', '-c', 'echo hi > out/a'],
      environment_variables: [{ name: 'PATH', value: '/bin' }],
      output_paths: ['out/a'],
      working_directory: 'pkg',
      output_node_properties: ['mtime'],
      output_directory_format: 'TREE_AND_DIRECTORY' as const,
    };
    const bytes = encode('Command', cmd);
    const out = decode('Command', bytes);
    assert.deepEqual(out.arguments, cmd.arguments);
    assert.deepEqual(out.environment_variables, cmd.environment_variables);
    assert.deepEqual(out.output_paths, cmd.output_paths);
    assert.deepEqual(out.output_files, []);
    assert.equal(out.platform, null);
    assert.equal(out.working_directory, 'pkg');
    assert.equal(out.output_directory_format, 'TREE_AND_DIRECTORY');
    assert.deepEqual(encode('Command', out), bytes);
  });

  it('ActionResult', () => {
    const ar = {
      output_files: [{ path: 'out/a', digest: { hash: 'f'.repeat(64), size_bytes: 3 }, is_executable: true }],
      output_directories: [
        { path: 'out/d', tree_digest: { hash: '1'.repeat(64), size_bytes: 10 }, is_topologically_sorted: true },
      ],
      output_symlinks: [{ path: 'out/l', target: 'a' }],
      exit_code: 1,
      stdout_raw: Buffer.from('hello\n'),
      stderr_digest: { hash: EMPTY_SHA256, size_bytes: 0 },
      execution_metadata: {
        worker: 'w1',
        queued_timestamp: { seconds: 1_700_000_000, nanos: 0 },
        virtual_execution_duration: { seconds: 2 },
        auxiliary_metadata: [packAny('RequestMetadata', { tool_details: { tool_name: 'bazel' } })],
      },
    };
    const bytes = encode('ActionResult', ar);
    const out = decode('ActionResult', bytes);
    assert.equal(out.exit_code, 1);
    assert.deepEqual(out.stdout_raw, Buffer.from('hello\n'));
    assert.equal(out.output_files[0]?.is_executable, true);
    assert.equal(out.output_directories[0]?.is_topologically_sorted, true);
    assert.equal(out.output_directories[0]?.root_directory_digest, null);
    assert.equal(out.output_symlinks[0]?.target, 'a');
    assert.equal(out.execution_metadata?.worker, 'w1');
    assert.deepEqual(out.execution_metadata?.virtual_execution_duration, { seconds: 2, nanos: 0 });
    const aux = out.execution_metadata?.auxiliary_metadata[0];
    assert.ok(aux);
    assert.equal(unpackAny(aux, 'RequestMetadata').tool_details?.tool_name, 'bazel');
    assert.deepEqual(encode('ActionResult', out), bytes);
  });

  it('decode matches what proto-loader hands to gRPC handlers', () => {
    const bytes = encode('ExecuteResponse', {
      result: { exit_code: 3, stdout_digest: { hash: 'x', size_bytes: 9007199254740991 } },
      cached_result: true,
      status: { code: 9, message: 'nope', details: [packAny('Digest', { hash: 'y', size_bytes: 1 })] },
      server_logs: { z: { digest: { hash: 'l', size_bytes: 2 }, human_readable: true }, a: { human_readable: false } },
      message: 'm',
    });
    const def = packageDefinition['build.bazel.remote.execution.v2.ExecuteResponse'] as unknown as {
      deserialize(b: Buffer): unknown;
    };
    assert.deepEqual(decode('ExecuteResponse', bytes), def.deserialize(bytes));
    const out = decode('ExecuteResponse', bytes);
    assert.equal(out.result?.stdout_digest?.size_bytes, 9007199254740991);
    assert.deepEqual(Object.keys(out.server_logs), ['a', 'z']);
  });
});

describe('protos: Any', () => {
  it('packs with the type.googleapis.com URL and unpacks typed', () => {
    const any = packAny('ExecuteOperationMetadata', {
      stage: 'EXECUTING',
      action_digest: { hash: 'h', size_bytes: 1 },
      stdout_stream_name: 'logs/out',
    });
    assert.equal(any.type_url, 'type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata');
    const md = unpackAny(any, 'ExecuteOperationMetadata');
    assert.equal(md.stage, 'EXECUTING');
    assert.equal(md.stdout_stream_name, 'logs/out');
    assert.equal(md.partial_execution_metadata, null);
    const u = unpackAny(any);
    assert.equal(u.typeName, 'ExecuteOperationMetadata');
    assert.throws(() => unpackAny(any, 'ExecuteResponse'), /expected build\.bazel\.remote\.execution\.v2\.ExecuteResponse/);
    assert.throws(() => unpackAny({ type_url: 'type.googleapis.com/no.Such', value: Buffer.alloc(0) }), /unknown type/);
  });

  it('round-trips an Operation carrying Any metadata and response', () => {
    const op = {
      name: 'operations/1',
      metadata: packAny('ExecuteOperationMetadata', { stage: 'COMPLETED' }),
      done: true,
      response: packAny('ExecuteResponse', { result: { exit_code: 0 }, cached_result: true }),
    };
    const out = decode('Operation', encode('Operation', op));
    assert.equal(out.result, 'response');
    assert.ok(out.response && out.metadata);
    assert.equal(unpackAny(out.response, 'ExecuteResponse').cached_result, true);
    assert.equal(unpackAny(out.metadata, 'ExecuteOperationMetadata').stage, 'COMPLETED');
  });
});

describe('protos: field numbers match the published API', () => {
  const cases: [string, Record<string, number>][] = [
    ['build.bazel.remote.execution.v2.Digest', { hash: 1, size_bytes: 2 }],
    [
      'build.bazel.remote.execution.v2.Action',
      { command_digest: 1, input_root_digest: 2, timeout: 6, do_not_cache: 7, salt: 9, platform: 10 },
    ],
    [
      'build.bazel.remote.execution.v2.Command',
      {
        arguments: 1,
        environment_variables: 2,
        output_files: 3,
        output_directories: 4,
        platform: 5,
        working_directory: 6,
        output_paths: 7,
        output_node_properties: 8,
        output_directory_format: 9,
      },
    ],
    [
      'build.bazel.remote.execution.v2.ExecuteRequest',
      { instance_name: 1, skip_cache_lookup: 3, action_digest: 6, execution_policy: 7, results_cache_policy: 8, digest_function: 9 },
    ],
    ['build.bazel.remote.execution.v2.BatchUpdateBlobsRequest.Request', { digest: 1, data: 2, compressor: 3 }],
    ['build.bazel.remote.execution.v2.FileNode', { name: 1, digest: 2, is_executable: 4, node_properties: 6 }],
    ['build.bazel.remote.execution.v2.Directory', { files: 1, directories: 2, symlinks: 3, node_properties: 5 }],
    ['build.bazel.remote.execution.v2.OutputDirectory', { path: 1, tree_digest: 3, is_topologically_sorted: 4, root_directory_digest: 5 }],
    [
      'build.bazel.remote.execution.v2.ExecuteOperationMetadata',
      { stage: 1, action_digest: 2, stdout_stream_name: 3, stderr_stream_name: 4, partial_execution_metadata: 5, digest_function: 6 },
    ],
    ['build.bazel.remote.execution.v2.ExecutedActionMetadata', { auxiliary_metadata: 11, virtual_execution_duration: 12 }],
    ['google.longrunning.Operation', { name: 1, metadata: 2, done: 3, error: 4, response: 5 }],
    ['google.rpc.Status', { code: 1, message: 2, details: 3 }],
    ['google.bytestream.WriteRequest', { resource_name: 1, write_offset: 2, finish_write: 3, data: 10 }],
  ];
  for (const [typeName, fields] of cases) {
    it(typeName, () => {
      const t = messageType(typeName);
      for (const [field, id] of Object.entries(fields)) {
        assert.equal(t.fields[field]?.id, id, `${typeName}.${field}`);
      }
    });
  }

  it('enum values', () => {
    const v2 = 'build.bazel.remote.execution.v2';
    assert.deepEqual({ ...root.lookupEnum(`${v2}.DigestFunction.Value`).values }, {
      UNKNOWN: 0, SHA256: 1, SHA1: 2, MD5: 3, VSO: 4, SHA384: 5, SHA512: 6, MURMUR3: 7, SHA256TREE: 8, BLAKE3: 9, GITSHA1: 10,
    });
    assert.deepEqual({ ...root.lookupEnum(`${v2}.Compressor.Value`).values }, { IDENTITY: 0, ZSTD: 1, DEFLATE: 2, BROTLI: 3 });
    assert.deepEqual({ ...root.lookupEnum(`${v2}.ExecutionStage.Value`).values }, {
      UNKNOWN: 0, CACHE_CHECK: 1, QUEUED: 2, EXECUTING: 3, COMPLETED: 4,
    });
  });
});
