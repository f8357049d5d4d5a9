// Minimal test helpers for the ctest executables (no test framework).
// EXPECT* checks are non-fatal: they print file:line and the failing
// expression (and the values), count the failure, and the test goes on; main()
// returns non-zero when sk_test::failures() > 0. (Not named CHECK*: c10's
// logging headers, included by ATen, already define glog-style CHECK macros.)
#pragma once

#include <cstdio>
#include <exception>
#include <sstream>
#include <string>

namespace sk_test {

inline int& failures() {
  static int n = 0;
  return n;
}

inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  ++failures();
}

template <typename A, typename B>
void check_eq(const A& a, const B& b, const char* expr, const char* file, int line) {
  if (a == b) return;
  std::ostringstream os;
  os << expr << "\n    left:  " << a << "\n    right: " << b;
  fail(file, line, os.str());
}

}  // namespace sk_test

#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) sk_test::fail(__FILE__, __LINE__, "EXPECT(" #cond ")");  \
  } while (0)

#define EXPECT_EQ(a, b) \
  sk_test::check_eq((a), (b), "EXPECT_EQ(" #a ", " #b ")", __FILE__, __LINE__)

// Passes when `expr` throws a std::exception (c10::Error is one).
#define EXPECT_THROWS(expr)                                               \
  do {                                                                    \
    bool sk_thrown_ = false;                                              \
    try {                                                                 \
      (void)(expr);                                                       \
    } catch (const std::exception&) {                                     \
      sk_thrown_ = true;                                                  \
    }                                                                     \
    if (!sk_thrown_)                                                      \
      sk_test::fail(__FILE__, __LINE__, "EXPECT_THROWS(" #expr "): no exception"); \
  } while (0)
