// errors.h — exceptions thrown by the fusedopt C++ API. Python sees ValueError / TypeError.
#pragma once

#include <stdexcept>
#include <string>

namespace fusedopt {

/// Base of every fusedopt error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// A value is out of its domain: shape mismatch, bad hyper-parameter, read-only output (Python ValueError).
class ValueError : public Error {
 public:
  using Error::Error;
};
/// An argument has the wrong type or dtype (Python TypeError).
class TypeError : public Error {
 public:
  using Error::Error;
};

}  // namespace fusedopt
