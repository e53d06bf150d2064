#include <cstdio>
#include <cstring>

#include "cc/checksum.h"
#include "cc/greet.h"

int main() {
  int failures = 0;
  if (Greet("reapi") != "Hello, reapi!") {
    std::fprintf(stderr, "Greet: got %s\n", Greet("reapi").c_str());
    failures++;
  }
  if (fnv1a32(FNV1A32_INIT, "", 0) != 0x811c9dc5u) {
    std::fprintf(stderr, "fnv1a32 of empty input is wrong\n");
    failures++;
  }
  // Reference value of FNV-1a 32 for "a".
  if (fnv1a32(FNV1A32_INIT, "a", 1) != 0xe40c292cu) {
    std::fprintf(stderr, "fnv1a32(\"a\") is wrong\n");
    failures++;
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
