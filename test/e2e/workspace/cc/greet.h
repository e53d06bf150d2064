#ifndef REAPI_E2E_GREET_H_
#define REAPI_E2E_GREET_H_

#include <string>

// Returns "Hello, <name>!".
std::string Greet(const std::string& name);

#endif  // REAPI_E2E_GREET_H_
