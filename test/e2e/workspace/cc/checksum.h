#ifndef REAPI_E2E_CHECKSUM_H_
#define REAPI_E2E_CHECKSUM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 32-bit FNV-1a, continuing from `hash` (start with FNV1A32_INIT). */
#define FNV1A32_INIT 0x811c9dc5u
uint32_t fnv1a32(uint32_t hash, const void* data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* REAPI_E2E_CHECKSUM_H_ */
