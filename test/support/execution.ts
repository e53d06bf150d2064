// The tests drive the Execution API with the same client library the `reapi` client commands use.
export * from '../../clients/remote-execution.ts';
