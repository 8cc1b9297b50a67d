// Helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "compress/error.h"

namespace compress::testing_util {

// Expects `fn()` to throw compress::Error of `kind` whose message contains `substring`.
template <typename Fn>
void ExpectError(Fn fn, ErrorKind kind, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << substring;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << substring;
  }
}

}  // namespace compress::testing_util
