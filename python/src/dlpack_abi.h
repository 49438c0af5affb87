// dlpack_abi.h — the DLPack C ABI that fusedopt consumes (DLPack 1.x), written out from the public
// specification: the struct layouts a producer hands over in a PyCapsule, the enum values and flags we
// read, and the capsule names of the Python exchange protocol. Layouts are fixed by the ABI, so they are
// pinned with static_asserts (LP64). Only what the consumer in dlpack.cpp needs is here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fusedopt::python::dlpack {

/// The DLPack major.minor we implement. A versioned capsule with another major version is rejected.
constexpr std::uint32_t kMajorVersion = 1;
constexpr std::uint32_t kMinorVersion = 0;

/// PyCapsule names: a producer's capsule and the names a consumer gives it once it owns the tensor.
constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";
constexpr const char* kVersionedCapsuleName = "dltensor_versioned";
constexpr const char* kUsedVersionedCapsuleName = "used_dltensor_versioned";

/// DLDeviceType (a C enum, int-sized in the ABI).
enum DeviceTypeCode : std::int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,  ///< pinned host memory
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,  ///< cudaMallocManaged memory
  kDLOneAPI = 14,
  kDLWebGPU = 15,
  kDLHexagon = 16,
  kDLMAIA = 17,
};

/// DLDataTypeCode.
enum DataTypeCode : std::uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLOpaqueHandle = 3,
  kDLBfloat = 4,
  kDLComplex = 5,
  kDLBool = 6,
  // DLPack 1.1+: sub-32-bit float formats, all rejected by fusedopt (named in messages only).
  kDLFloat8_e3m4 = 7,
  kDLFloat8_e4m3 = 8,
  kDLFloat8_e4m3b11fnuz = 9,
  kDLFloat8_e4m3fn = 10,
  kDLFloat8_e4m3fnuz = 11,
  kDLFloat8_e5m2 = 12,
  kDLFloat8_e5m2fnuz = 13,
  kDLFloat8_e8m0fnu = 14,
  kDLFloat6_e2m3fn = 15,
  kDLFloat6_e3m2fn = 16,
  kDLFloat4_e2m1fn = 17,
};

struct DLDevice {
  std::int32_t device_type;  ///< DeviceTypeCode
  std::int32_t device_id;
};

struct DLDataType {
  std::uint8_t code;  ///< DataTypeCode
  std::uint8_t bits;
  std::uint16_t lanes;
};

struct DLTensor {
  void* data;  ///< may be NULL for a tensor with no elements; add byte_offset before use
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;    ///< ndim entries; may be NULL when ndim == 0
  std::int64_t* strides;  ///< ndim entries in elements, or NULL = compact row-major
  std::uint64_t byte_offset;
};

/// The legacy (unversioned) managed tensor of capsule "dltensor".
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);  ///< may be NULL
};

struct DLPackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};

/// DLManagedTensorVersioned::flags bits.
constexpr std::uint64_t kFlagReadOnly = 1ULL << 0;
constexpr std::uint64_t kFlagIsCopied = 1ULL << 1;
constexpr std::uint64_t kFlagIsSubbytePadded = 1ULL << 2;

/// The managed tensor of capsule "dltensor_versioned" (DLPack >= 1.0). `version`, `manager_ctx` and
/// `deleter` keep their offsets in every major version, so a consumer may read the version and call
/// the deleter of a tensor whose major version it does not understand — and nothing else.
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);  ///< may be NULL
  std::uint64_t flags;
  DLTensor dl_tensor;
};

/// The C exchange API of DLPack 1.2+ (`type(obj).__dlpack_c_exchange_api__`, a PyCapsule named
/// "dlpack_exchange_api"): a producer's function table, so a consumer gets a DLTensor without a
/// capsule, a managed tensor or a deleter per call. Only the entries fusedopt calls are typed.
constexpr const char* kExchangeApiCapsuleName = "dlpack_exchange_api";

struct DLPackExchangeAPIHeader {
  DLPackVersion version;
  DLPackExchangeAPIHeader* prev_api;
};

struct DLPackExchangeAPI {
  DLPackExchangeAPIHeader header;
  void* managed_tensor_allocator;
  void* managed_tensor_from_py_object_no_sync;
  void* managed_tensor_to_py_object_no_sync;
  /// Fills a caller-provided DLTensor (shape/strides owned by the producer, valid until control
  /// returns to Python); 0 on success, -1 with a Python exception set. May be NULL.
  int (*dltensor_from_py_object_no_sync)(void* py_object, DLTensor* out);
  /// The producer's current stream for a device (torch.cuda.current_stream); 0 or -1 as above.
  int (*current_work_stream)(std::int32_t device_type, std::int32_t device_id, void** out_stream);
};

static_assert(sizeof(void*) == 8, "fusedopt's DLPack consumer assumes a 64-bit (LP64/LLP64) ABI");
static_assert(sizeof(DLDevice) == 8 && sizeof(DLDataType) == 4, "DLPack ABI");
static_assert(offsetof(DLTensor, device) == 8 && offsetof(DLTensor, ndim) == 16 &&
                  offsetof(DLTensor, dtype) == 20 && offsetof(DLTensor, shape) == 24 &&
                  offsetof(DLTensor, strides) == 32 && offsetof(DLTensor, byte_offset) == 40 &&
                  sizeof(DLTensor) == 48,
              "DLPack ABI: DLTensor layout");
static_assert(offsetof(DLManagedTensor, manager_ctx) == 48 &&
                  offsetof(DLManagedTensor, deleter) == 56 && sizeof(DLManagedTensor) == 64,
              "DLPack ABI: DLManagedTensor layout");
static_assert(offsetof(DLManagedTensorVersioned, manager_ctx) == 8 &&
                  offsetof(DLManagedTensorVersioned, deleter) == 16 &&
                  offsetof(DLManagedTensorVersioned, flags) == 24 &&
                  offsetof(DLManagedTensorVersioned, dl_tensor) == 32 &&
                  sizeof(DLManagedTensorVersioned) == 80,
              "DLPack ABI: DLManagedTensorVersioned layout");
static_assert(sizeof(DLPackExchangeAPIHeader) == 16 &&
                  offsetof(DLPackExchangeAPI, dltensor_from_py_object_no_sync) == 40 &&
                  offsetof(DLPackExchangeAPI, current_work_stream) == 48,
              "DLPack ABI: DLPackExchangeAPI layout");

}  // namespace fusedopt::python::dlpack
