// test_plan.cpp — fusedopt::check_call_arrays: the checks that span the launches of one call (a written
// array overlapping any other array; arrays on different devices), with messages naming both arrays.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fusedopt/fusedopt.h"

namespace {

using fusedopt::CallArray;
using fusedopt::DType;
using fusedopt::TensorView;

CallArray entry(float* p, std::int64_t n, const char* name, std::int64_t pos, bool written,
                fusedopt::Device dev = {}) {
  CallArray a;
  a.view = TensorView(p, DType::kFloat32, {n}, dev);
  a.name = name;
  a.position = pos;
  a.written = written;
  return a;
}

std::string message_of(const std::vector<CallArray>& arrays) {
  try {
    fusedopt::check_call_arrays("fused_step", arrays.data(), arrays.size());
  } catch (const fusedopt::ValueError& e) {
    return e.what();
  }
  return "";
}

TEST(CheckCallArrays, DisjointArraysPass) {
  std::vector<float> buf(40);
  const std::vector<CallArray> arrays = {
      entry(&buf[0], 10, "weights", 0, true), entry(&buf[10], 10, "grads", 0, false),
      entry(&buf[20], 10, "weights", 1, true), entry(&buf[30], 10, "grads", 1, false)};
  EXPECT_EQ(message_of(arrays), "");
}

TEST(CheckCallArrays, ReadOnlyArraysMayShareMemory) {
  std::vector<float> buf(30);
  const std::vector<CallArray> arrays = {
      entry(&buf[0], 10, "weights", 0, true), entry(&buf[10], 10, "grads", 0, false),
      entry(&buf[20], 10, "weights", 1, true), entry(&buf[10], 10, "grads", 1, false)};
  EXPECT_EQ(message_of(arrays), "");
}

TEST(CheckCallArrays, WrittenArrayOverlappingAnotherLaunchIsRefused) {
  std::vector<float> buf(40);
  // weights[3] starts inside weights[0]: different launches of an aggregate_num=2 call.
  const std::vector<CallArray> arrays = {
      entry(&buf[0], 10, "weights", 0, true), entry(&buf[20], 5, "grads", 0, false),
      entry(&buf[30], 5, "weights", 1, true), entry(&buf[5], 10, "weights", 3, true)};
  const std::string msg = message_of(arrays);
  EXPECT_NE(msg.find("fused_step"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weights[3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weights[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overlaps"), std::string::npos) << msg;
}

TEST(CheckCallArrays, ReadArrayInsideAWrittenOneIsRefused) {
  std::vector<float> buf(20);
  const std::vector<CallArray> arrays = {entry(&buf[0], 10, "moms", 2, true),
                                         entry(&buf[4], 2, "grads", 5, false)};
  const std::string msg = message_of(arrays);
  EXPECT_NE(msg.find("moms[2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("grads[5]"), std::string::npos) << msg;
}

TEST(CheckCallArrays, MixedDevicesAreRefused) {
  std::vector<float> buf(20);
  const fusedopt::Device gpu{fusedopt::DeviceType::kCUDA, 0};
  const std::vector<CallArray> arrays = {entry(&buf[0], 10, "weights", 0, true),
                                         entry(&buf[10], 10, "weights", 1, true, gpu)};
  const std::string msg = message_of(arrays);
  EXPECT_NE(msg.find("weights[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("one device"), std::string::npos) << msg;
}

TEST(CheckCallArrays, EmptyAndZeroSizeArraysPass) {
  EXPECT_NO_THROW(fusedopt::check_call_arrays("step", nullptr, 0));
  std::vector<float> buf(10);
  const std::vector<CallArray> arrays = {entry(&buf[0], 10, "weights", 0, true),
                                         entry(&buf[0], 0, "weights", 1, true)};
  EXPECT_EQ(message_of(arrays), "");
}

}  // namespace
