// The names of the digest functions we offer, apart from their implementations, so the config
// schema can name them without loading the hashing code.
export type DigestFunctionName = 'SHA256' | 'BLAKE3';
export const DIGEST_FUNCTION_NAMES = ['SHA256', 'BLAKE3'] as const satisfies readonly DigestFunctionName[];
