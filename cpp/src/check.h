// check.h — FUSEDOPT_CHECK: throw a typed fusedopt error whose message is built only on failure.
#pragma once

#include <sstream>
#include <string>

#include "fusedopt/errors.h"

namespace fusedopt::detail {

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class Err, class... Args>
[[noreturn]] void throw_error(const Args&... args) {
  throw Err(str_cat(args...));
}

}  // namespace fusedopt::detail

/// FUSEDOPT_CHECK(cond, ValueError, "sgd_update: ", "lr must be >= 0 (got ", lr, ")")
#define FUSEDOPT_CHECK(cond, Err, ...)                                   \
  do {                                                                   \
    if (!(cond)) ::fusedopt::detail::throw_error<::fusedopt::Err>(__VA_ARGS__); \
  } while (0)
