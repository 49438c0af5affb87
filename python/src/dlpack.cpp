// dlpack.cpp — the DLPack consumer (see dlpack.h for the protocol) and `_core._testing`, a hand-made
// producer that lets the tests reach every edge of the protocol no real producer exhibits.
#include "dlpack.h"

#include <pybind11/gil_safe_call_once.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "convert.h"
#include "dlpack_abi.h"
#include "fusedopt/errors.h"

namespace fusedopt::python {

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__qualname__")).cast<std::string>();
}

namespace {

using namespace dlpack;

/// How far the adapter trusts a producer (fusedopt._arrays._dlpack_export, third item).
enum Trust : int {
  kUnknownProducer = 0,  ///< legacy capsules carry no read-only flag: treated as read-only
  kKnownWritable = 1,    ///< NumPy, PyTorch, CuPy: legacy capsules are writable arrays
  kImmutable = 2,        ///< JAX: arrays are immutable whatever the capsule says
};

const py::object& export_adapter() {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> storage;
  return storage
      .call_once_and_store_result(
          [] { return py::module_::import("fusedopt._arrays").attr("_dlpack_export"); })
      .get_stored();
}

/// Re-raises a producer's error with its type, the argument named and the original as __cause__.
[[noreturn]] void reraise_named(py::error_already_set& e, const py::handle& src, const std::string& name) {
  const std::string msg = name + ": " + type_name(src) + ".__dlpack__() failed: " +
                          py::str(e.value()).cast<std::string>();
  py::raise_from(e, e.type().ptr(), msg.c_str());
  throw py::error_already_set();
}

/// Interned names and the constant argument tuples of the __dlpack__ call, made once (GIL held) and
/// kept for the life of the process.
struct CallConstants {
  PyObject* dlpack;            // "__dlpack__"
  PyObject* max_version;       // (1, 0)
  PyObject* kw_max;            // ("max_version",)
  PyObject* kw_max_stream;     // ("max_version", "stream")
  PyObject* kw_stream;         // ("stream",)
};

const CallConstants& call_constants() {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<CallConstants> storage;
  return storage
      .call_once_and_store_result([] {
        CallConstants c;
        c.dlpack = py::str("__dlpack__").release().ptr();
        PyUnicode_InternInPlace(&c.dlpack);
        c.max_version = py::make_tuple(kMajorVersion, kMinorVersion).release().ptr();
        c.kw_max = py::make_tuple("max_version").release().ptr();
        c.kw_max_stream = py::make_tuple("max_version", "stream").release().ptr();
        c.kw_stream = py::make_tuple("stream").release().ptr();
        return c;
      })
      .get_stored();
}

/// Calls __dlpack__(max_version=(1, 0)[, stream=s]); a producer that does not know max_version raises
/// TypeError and gets the plain call. Other errors are re-raised, with the argument named.
py::object call_dlpack(const py::object& src, const py::object& stream, const std::string& name) {
  const CallConstants& c = call_constants();
  const bool with_stream = !stream.is_none();
  // Vectorcall of the bound method: args[0] is self, then the keyword values.
  PyObject* args[3] = {src.ptr(), c.max_version, stream.ptr()};
  PyObject* r = PyObject_VectorcallMethod(c.dlpack, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                          with_stream ? c.kw_max_stream : c.kw_max);
  if (r != nullptr) return py::reinterpret_steal<py::object>(r);
  {
    py::error_already_set e;
    if (!e.matches(PyExc_TypeError)) reraise_named(e, src, name);
  }
  PyObject* args2[2] = {src.ptr(), stream.ptr()};
  r = PyObject_VectorcallMethod(c.dlpack, args2, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                with_stream ? c.kw_stream : nullptr);
  if (r != nullptr) return py::reinterpret_steal<py::object>(r);
  py::error_already_set e;
  reraise_named(e, src, name);
}

std::string dl_dtype_string(const DLDataType& t) {
  std::string base;
  switch (t.code) {
    case kDLInt: base = "int" + std::to_string(t.bits); break;
    case kDLUInt: base = "uint" + std::to_string(t.bits); break;
    case kDLFloat: base = "float" + std::to_string(t.bits); break;
    case kDLBfloat: base = "bfloat" + std::to_string(t.bits); break;
    case kDLComplex: base = "complex" + std::to_string(t.bits); break;
    case kDLBool: base = "bool"; break;
    case kDLOpaqueHandle: base = "opaque handle"; break;
    case kDLFloat8_e3m4: base = "float8_e3m4"; break;
    case kDLFloat8_e4m3: base = "float8_e4m3"; break;
    case kDLFloat8_e4m3b11fnuz: base = "float8_e4m3b11fnuz"; break;
    case kDLFloat8_e4m3fn: base = "float8_e4m3fn"; break;
    case kDLFloat8_e4m3fnuz: base = "float8_e4m3fnuz"; break;
    case kDLFloat8_e5m2: base = "float8_e5m2"; break;
    case kDLFloat8_e5m2fnuz: base = "float8_e5m2fnuz"; break;
    case kDLFloat8_e8m0fnu: base = "float8_e8m0fnu"; break;
    case kDLFloat6_e2m3fn: base = "float6_e2m3fn"; break;
    case kDLFloat6_e3m2fn: base = "float6_e3m2fn"; break;
    case kDLFloat4_e2m1fn: base = "float4_e2m1fn"; break;
    default:
      base = "DLPack type code " + std::to_string(int(t.code)) + " (" + std::to_string(int(t.bits)) +
             " bits)";
  }
  if (t.lanes != 1) base += " x " + std::to_string(t.lanes) + " lanes";
  return base;
}

bool dtype_of(const DLDataType& t, DType* out) {
  if (t.lanes != 1) return false;
  if (t.code == kDLFloat) {
    if (t.bits == 16) *out = DType::kFloat16;
    else if (t.bits == 32) *out = DType::kFloat32;
    else if (t.bits == 64) *out = DType::kFloat64;
    else return false;
    return true;
  }
  if (t.code == kDLBfloat && t.bits == 16) {
    *out = DType::kBFloat16;
    return true;
  }
  return false;
}

const char* dl_device_name(std::int32_t type) {
  switch (type) {
    case kDLCPU: return "cpu";
    case kDLCUDA: return "cuda";
    case kDLCUDAHost: return "cuda_host";
    case kDLOpenCL: return "opencl";
    case kDLVulkan: return "vulkan";
    case kDLMetal: return "metal";
    case kDLVPI: return "vpi";
    case kDLROCM: return "rocm";
    case kDLROCMHost: return "rocm_host";
    case kDLExtDev: return "ext_dev";
    case kDLCUDAManaged: return "cuda_managed";
    case kDLOneAPI: return "oneapi";
    case kDLWebGPU: return "webgpu";
    case kDLHexagon: return "hexagon";
    case kDLMAIA: return "maia";
    default: return "unknown";
  }
}

/// Fills `view` from `t`; throws (leaving the capsule to its own destructor) when fusedopt cannot use
/// the tensor as it is.
void fill_view(const DLTensor& t, std::uint64_t flags, bool versioned, int trust, bool output,
               const ArgLabel& label, py::handle producer, TensorView* view) {
  if (versioned && (flags & kFlagIsCopied) != 0 && output)
    throw py::buffer_error(label.str() + " is a copy made by its producer (DLPack flag IS_COPIED): an "
                                  "in-place update of it would be lost");

  switch (t.device.device_type) {
    case kDLCPU: view->device = Device{DeviceType::kCPU, 0}; break;
    case kDLCUDA: view->device = Device{DeviceType::kCUDA, t.device.device_id}; break;
    case kDLCUDAHost: view->device = Device{DeviceType::kCUDAHost, t.device.device_id}; break;
    case kDLCUDAManaged: view->device = Device{DeviceType::kCUDAManaged, t.device.device_id}; break;
    default:
      throw py::buffer_error(label.str() + " is on DLPack device " + dl_device_name(t.device.device_type) +
                             " (type " + std::to_string(t.device.device_type) +
                             "); fusedopt supports cpu, cuda, cuda_host and cuda_managed");
  }

  if (t.ndim < 0) throw py::buffer_error(label.str() + ": malformed DLPack tensor (ndim < 0)");
  if (t.ndim > TensorView::kMaxDims)
    throw ValueError(label.str() + " has " + std::to_string(t.ndim) +
                     " dimensions; fusedopt supports at most " + std::to_string(TensorView::kMaxDims));
  if (!dtype_of(t.dtype, &view->dtype))
    throw TypeError(label.str() + " must have dtype float16, bfloat16, float32 or float64, got " +
                    dl_dtype_string(t.dtype));
  if (t.ndim > 0 && t.shape == nullptr)
    throw py::buffer_error(label.str() + ": malformed DLPack tensor (NULL shape with ndim > 0)");

  const auto ndim = t.ndim;
  view->ndim = ndim;
  std::int64_t numel = 1;
  for (std::int32_t i = 0; i < ndim; ++i) {
    const std::int64_t d = t.shape[i];
    if (d < 0)
      throw ValueError(label.str() + " has a negative dimension (" + std::to_string(d) + ") in its shape");
    view->shape[static_cast<std::size_t>(i)] = d;
    if (__builtin_mul_overflow(numel, d, &numel))
      throw ValueError(label.str() + " has more elements than fit in 64 bits");
  }
  std::int64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::int64_t>(dtype_size(view->dtype)), &nbytes))
    throw ValueError(label.str() + " has more bytes than fit in 64 bits");

  // Strides in elements. NULL = compact row-major (DLPack < 1.2). Size-1 dimensions may carry any
  // stride: they are normalised to the row-major value, so only real layout differences remain. The
  // C++ API then accepts dense layouts shared by all arrays of an update (a transposed array,
  // channels_last) and rejects the rest (negative, zero, gapped strides; strides that differ).
  view->has_strides = false;
  if (ndim > 0 && t.strides != nullptr && numel > 0) {
    std::int64_t expected = 1;
    bool contiguous = true;
    for (std::int32_t i = ndim - 1; i >= 0; --i) {
      const auto k = static_cast<std::size_t>(i);
      const std::int64_t d = view->shape[k];
      const std::int64_t s = d == 1 ? expected : t.strides[i];
      view->strides[k] = s;
      if (s != expected) contiguous = false;
      expected *= d;  // no overflow: bounded by numel
    }
    view->has_strides = !contiguous;
  }

  // byte_offset is always added; a NULL pointer stays NULL (valid only without elements, which the
  // C++ API checks). No alignment is assumed: the kernels handle any element-aligned address.
  view->data = t.data == nullptr ? nullptr : static_cast<char*>(t.data) + t.byte_offset;

  if (versioned) {
    view->read_only = (flags & kFlagReadOnly) != 0;
  } else {
    view->read_only = trust != kKnownWritable;
    if (view->read_only && output && trust == kUnknownProducer)
      throw ValueError(label.str() + ": " + type_name(producer) +
                       " exported a legacy (unversioned) DLPack capsule, which cannot say whether "
                       "the array is read-only; fusedopt writes only through versioned capsules "
                       "(__dlpack__(max_version=(1, 0))) or legacy ones from NumPy, PyTorch and CuPy");
  }
  if (trust == kImmutable) view->read_only = true;
}

Stream to_stream(const py::handle& s) {
  const auto v = s.cast<std::intptr_t>();
  // 1 = the legacy default stream (fusedopt's null Stream); 2 = cudaStreamPerThread; else a pointer.
  return Stream{v == 1 ? nullptr : reinterpret_cast<void*>(v)};
}

// ---- PyTorch-only checks -----------------------------------------------------------------------------

/// The end of the message for a tensor with the negative bit (fusedopt._arrays._NEG_MESSAGE).
std::string torch_neg_message() {
  return py::module_::import("fusedopt._arrays").attr("_NEG_MESSAGE").cast<std::string>();
}

/// The exact storage check (Python: fusedopt._arrays._torch_storage_problem).
void check_torch_storage(py::handle obj, const ArgLabel& label) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> fn;
  const py::object& f =
      fn.call_once_and_store_result([] {
          return py::module_::import("fusedopt._arrays").attr("_torch_storage_problem");
        }).get_stored();
  note_callback();
  py::object problem = f(obj);
  if (!problem.is_none()) throw ValueError(label.str() + problem.cast<std::string>());
}

// ---- the C exchange API (DLPack 1.2+) ---------------------------------------------------------------

/// Conversions done through a producer's C exchange API (for the tests) and whether it may be used.
std::int64_t g_exchange_conversions = 0;
bool g_exchange_enabled = true;

/// One entry per Python type seen by import_dlpack: its exchange table, or null when fusedopt does not
/// use one for that type. Strong references keep the type (so its address is never reused by another
/// type) and the capsule (whose table must outlive its use) alive. Read and written with the GIL held.
struct ExchangeEntry {
  PyTypeObject* type;
  py::object type_ref, capsule;
  const DLPackExchangeAPI* api;
  /// The type's `is_neg` method descriptor (PyTorch): a tensor with the negative bit set exports its
  /// memory without the sign, so it is refused.
  py::object is_neg;
};

/// The exchange table for objects of `obj`'s type, or null. `fusedopt._arrays._exchange_allowed(type)`
/// decides which types may skip __dlpack__: those of producers whose arrays are known writable and
/// never copied on export, and whose __dlpack__ is not overridden (a subclass that customises its
/// export keeps it). The table must be of our major version and provide the two functions we call.
const ExchangeEntry& exchange_entry_for(py::handle obj) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<std::vector<ExchangeEntry>> storage;
  auto& cache = storage.call_once_and_store_result([] { return std::vector<ExchangeEntry>(); })
                    .get_stored();
  PyTypeObject* tp = Py_TYPE(obj.ptr());
  for (const ExchangeEntry& e : cache)
    if (e.type == tp) return e;
  note_callback();  // _exchange_allowed is Python code
  ExchangeEntry entry{tp, py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(tp)),
                      py::object(), nullptr, py::object()};
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> allowed;
  const py::object& allowed_fn =
      allowed
          .call_once_and_store_result(
              [] { return py::module_::import("fusedopt._arrays").attr("_exchange_allowed"); })
          .get_stored();
  if (allowed_fn(entry.type_ref).cast<bool>()) {
    PyObject* cap = PyObject_GetAttrString(entry.type_ref.ptr(), "__dlpack_c_exchange_api__");
    if (cap != nullptr && PyCapsule_IsValid(cap, kExchangeApiCapsuleName)) {
      const auto* api =
          static_cast<const DLPackExchangeAPI*>(PyCapsule_GetPointer(cap, kExchangeApiCapsuleName));
      PyObject* is_neg = PyObject_GetAttrString(entry.type_ref.ptr(), "is_neg");
      if (api != nullptr && api->header.version.major == kMajorVersion &&
          api->dltensor_from_py_object_no_sync != nullptr && api->current_work_stream != nullptr &&
          is_neg != nullptr) {
        entry.api = api;
        entry.capsule = py::reinterpret_steal<py::object>(cap);
        entry.is_neg = py::reinterpret_steal<py::object>(is_neg);
        cap = nullptr;
        is_neg = nullptr;
      }
      Py_XDECREF(is_neg);
    }
    Py_XDECREF(cap);
    PyErr_Clear();  // no attribute / not a capsule: the type just has no usable table
  }
  cache.push_back(std::move(entry));
  return cache.back();
}

/// A data pointer below 4 GiB is where PyTorch's view of a storage resized to 0 bytes points
/// (storage_offset * itemsize past a null storage): worth the exact (Python) check of the storage.
constexpr std::uintptr_t kSuspiciousAddress = std::uintptr_t{1} << 32;

/// Raises when a PyTorch tensor cannot be used as it is exported: the negative bit (the memory holds
/// the values without the sign) or elements outside its storage (resized, e.g. to 0 bytes, by
/// `untyped_storage().resize_(0)`; the exported pointer then is not null but points nowhere).
void check_torch_tensor(py::handle obj, const ExchangeEntry& e, const TensorView& view,
                        const ArgLabel& label) {
  PyObject* self = obj.ptr();
  PyObject* r = PyObject_Vectorcall(e.is_neg.ptr(), &self, 1, nullptr);
  if (r == nullptr) throw py::error_already_set();
  const bool neg = r == Py_True;
  Py_DECREF(r);
  if (neg) throw TypeError(label.str() + torch_neg_message());
  if (view.numel() > 0 && reinterpret_cast<std::uintptr_t>(view.data) < kSuspiciousAddress)
    check_torch_storage(obj, label);
}

}  // namespace

bool exchange_view(py::handle obj, const ArgLabel& label, bool output, TensorView* view,
                   std::optional<Stream>* stream) {
  if (!g_exchange_enabled) return false;
  const ExchangeEntry& entry = exchange_entry_for(obj);
  const DLPackExchangeAPI* api = entry.api;
  if (api == nullptr) return false;
  DLTensor t{};
  if (api->dltensor_from_py_object_no_sync(obj.ptr(), &t) != 0) {
    PyErr_Clear();
    return false;
  }
  // What the table gives is a plain DLTensor (no flags): the producer is a known-writable one.
  fill_view(t, 0, false, kKnownWritable, output, label, obj, view);
  check_torch_tensor(obj, entry, *view, label);
  if (view->device.type == DeviceType::kCUDA) {
    // Launch on the producer's current stream, as the __dlpack__ path does (no synchronisation).
    void* s = nullptr;
    if (api->current_work_stream(kDLCUDA, t.device.device_id, &s) != 0)
      throw py::error_already_set();
    *stream = Stream{s};
  } else {
    stream->reset();
  }
  ++g_exchange_conversions;
  return true;
}

namespace {

/// The exchange-API path of import_dlpack, as an ArrayRef.
std::optional<ArrayRef> import_exchange(py::handle obj, const ArgLabel& label, bool output) {
  ArrayRef ref;
  if (!exchange_view(obj, label, output, &ref.view, &ref.stream)) return std::nullopt;
  ref.owner = py::reinterpret_borrow<py::object>(obj);
  return ref;
}

}  // namespace

void DLPackHolder::reset() noexcept {
  void* m = managed_;
  if (m == nullptr) return;
  managed_ = nullptr;
  // Past interpreter finalisation a producer's deleter cannot run (it needs the GIL): leak, as NumPy.
  if (!Py_IsInitialized()) return;
  auto call = [&] {
    if (versioned_) {
      auto* t = static_cast<DLManagedTensorVersioned*>(m);
      if (t->deleter != nullptr) t->deleter(t);
    } else {
      auto* t = static_cast<DLManagedTensor*>(m);
      if (t->deleter != nullptr) t->deleter(t);
    }
  };
  if (PyGILState_Check()) {
    call();
  } else {
    py::gil_scoped_acquire gil;
    call();
  }
}

int exchange_matches(py::handle obj, const TensorView& view) {
  const DLPackExchangeAPI* api = exchange_entry_for(obj).api;
  if (api == nullptr) return -1;
  DLTensor t{};
  if (api->dltensor_from_py_object_no_sync(obj.ptr(), &t) != 0) {
    PyErr_Clear();
    return 0;
  }
  DType dtype;
  const void* data = t.data == nullptr ? nullptr : static_cast<char*>(t.data) + t.byte_offset;
  if (data != view.data || t.ndim != view.ndim || !dtype_of(t.dtype, &dtype) || dtype != view.dtype ||
      t.device.device_type != static_cast<std::int32_t>(view.device.type) ||
      (view.device.type != DeviceType::kCPU && t.device.device_id != view.device.id))
    return 0;
  for (std::int32_t i = 0; i < t.ndim; ++i)
    if (t.shape[i] != view.shape[static_cast<std::size_t>(i)]) return 0;
  if (t.strides != nullptr && view.numel() > 0)
    for (std::int32_t i = 0; i < t.ndim; ++i)
      if (t.shape[i] != 1 && t.strides[i] != view.stride(i)) return 0;
  return 1;
}

std::optional<ArrayRef> import_dlpack(py::handle obj, const ArgLabel& label, bool output) {
  // PyTorch's C exchange table first: no attribute lookup, capsule or deleter per array.
  if (std::optional<ArrayRef> fast = import_exchange(obj, label, output)) return fast;
  note_callback();  // from here on, Python code runs: hasattr, the adapter, __dlpack__
  if (!py::hasattr(obj, "__dlpack__")) return std::nullopt;
  const std::string name = label.str();
  auto producer = [&obj] { return type_name(obj); };
  py::tuple exported = export_adapter()(obj);
  py::object src = exported[0];
  py::object stream = exported[1];
  const int trust = exported[2].cast<int>();
  if (!exported[3].is_none()) {  // PyTorch: negative bit, elements outside the storage
    py::tuple problem = exported[3];
    const std::string msg = name + problem[1].cast<std::string>();
    if (problem[0].cast<bool>()) throw TypeError(msg);
    throw ValueError(msg);
  }
  if (trust == kImmutable && output)
    throw TypeError(name + " is an immutable " + producer() +
                    " array; fusedopt updates weights and states in place, which JAX arrays do not "
                    "allow (write-through is undefined behaviour)");

  py::object cap = call_dlpack(src, stream, name);
  PyObject* c = cap.ptr();
  if (!PyCapsule_CheckExact(c))
    throw TypeError(name + ": " + producer() + ".__dlpack__() returned " + type_name(cap) +
                    ", not a PyCapsule");
  const char* cname = PyCapsule_GetName(c);
  bool versioned = false;
  if (cname != nullptr && std::strcmp(cname, kVersionedCapsuleName) == 0) {
    versioned = true;
  } else if (cname == nullptr || std::strcmp(cname, kCapsuleName) != 0) {
    throw py::buffer_error(name + ": " + producer() + ".__dlpack__() returned a capsule named '" +
                           (cname != nullptr ? cname : "(null)") +
                           "'; expected 'dltensor_versioned' or 'dltensor' (a used capsule "
                           "cannot be consumed again)");
  }
  void* managed = PyCapsule_GetPointer(c, cname);
  if (managed == nullptr) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw py::buffer_error(name + ": the DLPack capsule holds a NULL tensor");
  }

  const DLTensor* t = nullptr;
  std::uint64_t flags = 0;
  if (versioned) {
    auto* m = static_cast<DLManagedTensorVersioned*>(managed);
    if (m->version.major != kMajorVersion) {
      // Another major version: only `version` and `deleter` may be read. We own the tensor from here
      // (the capsule's destructor must not delete it again) and release it at once.
      const std::string got = std::to_string(m->version.major) + "." + std::to_string(m->version.minor);
      if (PyCapsule_SetName(c, kUsedVersionedCapsuleName) != 0) throw py::error_already_set();
      DLPackHolder(m, true).reset();
      throw py::buffer_error(name + ": " + producer() + " exported DLPack version " + got +
                             "; fusedopt reads major version " + std::to_string(kMajorVersion));
    }
    t = &m->dl_tensor;
    flags = m->flags;
  } else {
    t = &static_cast<DLManagedTensor*>(managed)->dl_tensor;
  }

  ArrayRef ref;
  fill_view(*t, flags, versioned, trust, output, label, obj, &ref.view);
  if (stream && !stream.is_none() && ref.view.device.type == DeviceType::kCUDA)
    ref.stream = to_stream(stream);

  // Success: the consumer owns the tensor now.
  if (PyCapsule_SetName(c, versioned ? kUsedVersionedCapsuleName : kUsedCapsuleName) != 0)
    throw py::error_already_set();
  ref.dlpack = DLPackHolder(managed, versioned);
  ref.owner = py::reinterpret_borrow<py::object>(obj);
  return ref;
}

// -------------------------------------------------------------------------------------------------
// _core._testing: a configurable DLPack producer.
// -------------------------------------------------------------------------------------------------
namespace {

struct Export;

/// What the producer observed; shared by the tensor object, its capsules and its exports.
struct Stats {
  std::int64_t deleter_calls = 0;
  std::int64_t deleter_calls_without_gil = 0;
  std::vector<std::string> destroyed_capsule_names;
  double value_at_delete = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::unique_ptr<Export>> kept;  ///< exports with a NULL deleter live as long as this
};

struct Export {
  DLManagedTensor legacy{};
  DLManagedTensorVersioned versioned{};
  std::vector<std::int64_t> shape, strides;
  std::shared_ptr<Stats> stats;  ///< null for exports with a NULL deleter
  bool readable = false;         ///< data is a NumPy buffer (not a raw address): the deleter may read it
};

struct CapsuleContext {
  std::shared_ptr<Stats> stats;
  std::string name;
  bool versioned;
};

void record_delete(Export* ex, const DLTensor& t) {
  Stats& s = *ex->stats;
  ++s.deleter_calls;
  if (!PyGILState_Check()) ++s.deleter_calls_without_gil;
  // The first element as the deleter sees it (host memory only): proves the consumer released the
  // tensor after its kernel wrote, not before.
  if (!ex->readable || t.data == nullptr) return;
  for (std::int32_t i = 0; i < t.ndim; ++i)
    if (t.shape[i] <= 0) return;
  if (t.dtype.code == kDLFloat) {
    const char* p = static_cast<const char*>(t.data) + t.byte_offset;
    if (t.dtype.bits == 32) {
      float f;
      std::memcpy(&f, p, sizeof f);
      s.value_at_delete = f;
    } else if (t.dtype.bits == 64) {
      std::memcpy(&s.value_at_delete, p, sizeof(double));
    }
  }
}

void legacy_deleter(DLManagedTensor* m) {
  auto* ex = static_cast<Export*>(m->manager_ctx);
  record_delete(ex, m->dl_tensor);
  delete ex;
}

void versioned_deleter(DLManagedTensorVersioned* m) {
  auto* ex = static_cast<Export*>(m->manager_ctx);
  record_delete(ex, m->dl_tensor);
  delete ex;
}

/// As real producers do: a capsule that was never consumed (name not "used_*") deletes its tensor.
void capsule_destructor(PyObject* cap) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  auto* ctx = static_cast<CapsuleContext*>(PyCapsule_GetContext(cap));
  const char* nm = PyCapsule_GetName(cap);
  if (ctx != nullptr) {
    ctx->stats->destroyed_capsule_names.emplace_back(nm != nullptr ? nm : "");
    if (nm == nullptr || std::strncmp(nm, "used_", 5) != 0) {
      void* p = PyCapsule_GetPointer(cap, nm);
      if (p != nullptr) {
        if (ctx->versioned) {
          auto* m = static_cast<DLManagedTensorVersioned*>(p);
          if (m->deleter != nullptr) m->deleter(m);
        } else {
          auto* m = static_cast<DLManagedTensor*>(p);
          if (m->deleter != nullptr) m->deleter(m);
        }
      }
    }
  }
  PyErr_Clear();
  delete ctx;
  PyErr_Restore(type, value, tb);
}

class TestTensor {
 public:
  std::vector<std::int64_t> shape;
  std::optional<std::vector<std::int64_t>> strides;
  void* data = nullptr;
  bool readable = false;
  py::object base;  ///< keeps the memory behind `data` alive
  DLDataType dtype{kDLFloat, 32, 1};
  DLDevice device{kDLCPU, 0};
  std::uint64_t byte_offset = 0;
  bool versioned = true;
  DLPackVersion version{kMajorVersion, kMinorVersion};
  std::uint64_t flags = 0;
  bool accepts_max_version = true;
  bool null_deleter = false;
  std::optional<std::string> capsule_name;

  std::int64_t calls = 0;
  py::list call_kwargs;
  std::shared_ptr<Stats> stats = std::make_shared<Stats>();

  py::object dlpack(const py::kwargs& kw) {
    ++calls;
    call_kwargs.append(py::dict(kw));
    bool asked_versioned = false;
    if (kw.contains("max_version")) {
      if (!accepts_max_version)
        throw py::type_error("__dlpack__() got an unexpected keyword argument 'max_version'");
      py::object mv = kw["max_version"];
      if (!mv.is_none()) asked_versioned = py::cast<py::tuple>(mv)[0].cast<int>() >= 1;
    }
    const bool give_versioned = versioned && asked_versioned;

    auto ex = std::make_unique<Export>();
    ex->shape = shape;
    ex->readable = readable;
    if (strides) ex->strides = *strides;
    DLTensor t{};
    t.data = data;
    t.device = device;
    t.ndim = static_cast<std::int32_t>(shape.size());
    t.dtype = dtype;
    t.shape = ex->shape.empty() ? nullptr : ex->shape.data();
    t.strides = strides && !ex->strides.empty() ? ex->strides.data() : nullptr;
    t.byte_offset = byte_offset;
    void* managed;
    if (give_versioned) {
      ex->versioned.version = version;
      ex->versioned.manager_ctx = ex.get();
      ex->versioned.deleter = null_deleter ? nullptr : &versioned_deleter;
      ex->versioned.flags = flags;
      ex->versioned.dl_tensor = t;
      managed = &ex->versioned;
    } else {
      ex->legacy.dl_tensor = t;
      ex->legacy.manager_ctx = ex.get();
      ex->legacy.deleter = null_deleter ? nullptr : &legacy_deleter;
      managed = &ex->legacy;
    }
    auto ctx = std::make_unique<CapsuleContext>();
    ctx->stats = stats;
    ctx->versioned = give_versioned;
    ctx->name = capsule_name ? *capsule_name
                             : std::string(give_versioned ? kVersionedCapsuleName : kCapsuleName);
    PyObject* cap = PyCapsule_New(managed, ctx->name.c_str(), &capsule_destructor);
    if (cap == nullptr) throw py::error_already_set();
    // From here the capsule owns ctx and (through its destructor or a consumer) the export.
    if (PyCapsule_SetContext(cap, ctx.release()) != 0) {
      Py_DECREF(cap);
      throw py::error_already_set();
    }
    if (null_deleter) {
      stats->kept.push_back(std::move(ex));
    } else {
      ex->stats = stats;
      ex.release();
    }
    return py::reinterpret_steal<py::object>(cap);
  }
};

}  // namespace

void bind_dlpack_testing(py::module_& m) {
  using namespace pybind11::literals;
  py::module_ sub = m.def_submodule(
      "_testing", "Test helpers for fusedopt's DLPack consumer (private; not part of the API).");

  sub.def(
      "callback_epoch", [] { return callback_epoch(); },
      "Calls into Python code during argument conversion so far (Note [callbacks during conversion]).");
  sub.def(
      "exchange_conversions", [] { return g_exchange_conversions; },
      "Arguments converted through a producer's DLPack C exchange API so far.");
  sub.def(
      "set_exchange_enabled",
      [](bool on) {
        const bool was = g_exchange_enabled;
        g_exchange_enabled = on;
        return was;
      },
      "on"_a, "Use (True) or skip (False) producers' C exchange API; returns the previous setting.");

  py::class_<TestTensor>(sub, "DLPackTestTensor",
                         "A hand-made DLPack producer; see make_tensor. Counts its deleter calls.")
      .def("__dlpack__", &TestTensor::dlpack)
      .def("__dlpack_device__",
           [](const TestTensor& t) { return py::make_tuple(t.device.device_type, t.device.device_id); })
      .def_readonly("calls", &TestTensor::calls, "__dlpack__ calls")
      .def_readonly("call_kwargs", &TestTensor::call_kwargs, "keyword arguments of each __dlpack__ call")
      .def_property_readonly("deleter_calls", [](const TestTensor& t) { return t.stats->deleter_calls; })
      .def_property_readonly("deleter_calls_without_gil",
                             [](const TestTensor& t) { return t.stats->deleter_calls_without_gil; })
      .def_property_readonly("destroyed_capsule_names",
                             [](const TestTensor& t) { return t.stats->destroyed_capsule_names; })
      .def_property_readonly("value_at_delete",
                             [](const TestTensor& t) { return t.stats->value_at_delete; });

  sub.def(
      "make_tensor",
      [](std::vector<std::int64_t> shape, py::object base, std::optional<std::uintptr_t> address,
         std::optional<std::vector<std::int64_t>> strides, std::tuple<int, int, int> dtype,
         std::tuple<int, int> device, std::uint64_t byte_offset, bool versioned,
         std::tuple<std::uint32_t, std::uint32_t> version, std::uint64_t flags,
         bool accepts_max_version, bool null_deleter, std::optional<std::string> capsule_name) {
        TestTensor t;
        t.shape = std::move(shape);
        t.strides = std::move(strides);
        if (address) {
          t.data = reinterpret_cast<void*>(*address);
        } else if (!base.is_none()) {
          t.data = const_cast<void*>(py::cast<py::array>(base).data());
          t.readable = true;
        }
        t.base = base;
        t.dtype = DLDataType{static_cast<std::uint8_t>(std::get<0>(dtype)),
                             static_cast<std::uint8_t>(std::get<1>(dtype)),
                             static_cast<std::uint16_t>(std::get<2>(dtype))};
        t.device = DLDevice{std::get<0>(device), std::get<1>(device)};
        t.byte_offset = byte_offset;
        t.versioned = versioned;
        t.version = DLPackVersion{std::get<0>(version), std::get<1>(version)};
        t.flags = flags;
        t.accepts_max_version = accepts_max_version;
        t.null_deleter = null_deleter;
        t.capsule_name = std::move(capsule_name);
        return t;
      },
      "shape"_a, py::kw_only(), "base"_a = py::none(), "address"_a = py::none(),
      "strides"_a = py::none(), "dtype"_a = std::make_tuple(2, 32, 1),
      "device"_a = std::make_tuple(1, 0), "byte_offset"_a = 0, "versioned"_a = true,
      "version"_a = std::make_tuple(1, 0), "flags"_a = 0, "accepts_max_version"_a = true,
      "null_deleter"_a = false, "capsule_name"_a = py::none(),
      R"doc(A DLPack producer over `base` (a NumPy array kept alive; its buffer is `data`) or a raw
`address` (never dereferenced by a correct consumer unless the device is host memory).
dtype = (code, bits, lanes), device = (type, id). `versioned`: a "dltensor_versioned" capsule of
`version` with `flags` when __dlpack__ is called with max_version >= (1, 0), else "dltensor".
`accepts_max_version=False`: an old producer (TypeError on max_version). `null_deleter`: deleter NULL.
`capsule_name`: a wrong capsule name. Unconsumed capsules delete their tensor when destroyed.)doc");

  sub.def(
      "inspect",
      [](py::handle obj, const std::string& name) {
        ArrayRef r = to_array_ref(obj, "inspect", name.c_str());
        py::dict d;
        const TensorView& v = r.view;
        d["data"] = reinterpret_cast<std::uintptr_t>(v.data);
        d["dtype"] = dtype_name(v.dtype);
        d["shape"] = std::vector<std::int64_t>(v.shape.begin(), v.shape.begin() + v.ndim);
        d["strides"] = v.has_strides ? py::cast(std::vector<std::int64_t>(
                                           v.strides.begin(), v.strides.begin() + v.ndim))
                                     : py::none();
        d["contiguous"] = v.is_contiguous();
        d["dense"] = v.is_dense();
        d["read_only"] = v.read_only;
        d["device"] = py::make_tuple(static_cast<int>(v.device.type), v.device.id);
        d["stream"] = r.stream ? py::cast(reinterpret_cast<std::uintptr_t>(r.stream->handle))
                               : py::none();
        d["dlpack"] = r.dlpack.owns();
        return d;
      },
      "obj"_a, "name"_a = "weight",
      "The TensorView that to_array_ref builds for `obj` as argument `name` (released on return).");
}

}  // namespace fusedopt::python
