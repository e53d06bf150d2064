// Defaults of a macro expansion through the fleet, apart from the client so the command line can
// name them without loading gRPC.

/** How long one expansion may take unless the caller says otherwise. */
export const DEFAULT_EXPAND_TIMEOUT_SECONDS = 60;
