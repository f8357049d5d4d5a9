// Argument checks shared by the backends. The Python layer (sparse_kernels/ops.py)
// raises clear ValueError/TypeError first; these are the last line of defence
// for callers who go straight to torch.ops.sparse_kernels.
#pragma once

#include <ATen/ATen.h>

#define SK_CHECK_INDEX(t)                                                   \
  TORCH_CHECK((t).scalar_type() == at::kInt && (t).dim() == 1 &&            \
                  (t).is_contiguous(),                                      \
              #t " must be a contiguous 1-D int32 tensor, got ",            \
              (t).scalar_type(), " with shape ", (t).sizes())

#define SK_CHECK_FLOAT(t)                                                   \
  TORCH_CHECK(at::isFloatingType((t).scalar_type()),                        \
              #t " must be a floating-point tensor, got ", (t).scalar_type())

#define SK_CHECK_SAME_DTYPE(a, b)                                           \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), #a " and " #b         \
              " must have the same dtype, got ", (a).scalar_type(), " and ", \
              (b).scalar_type())

#define SK_CHECK_DIM(t, d)                                                  \
  TORCH_CHECK((t).dim() == (d), #t " must be " #d "-D, got shape ",         \
              (t).sizes())
