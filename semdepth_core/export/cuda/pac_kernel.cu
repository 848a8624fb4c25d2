// Fused pixel-adaptive convolution forward (Eq. 4-5 of Guizilini et al., ICLR 2020):
//
//   out[b,o,i] = bias[o] + sum_{j in window(i)} K(f_i, f_j) * sum_c W[o,c,j-i] * x[b,c,j]
//   K(f_i, f_j) = exp(-1/2 * ||f_i - f_j||^2 / sigma^2),  sigma = exp(log_sigma[o or 0])
//
// Semantics identical to the ONNX custom op semdepth::PacConv2d and to
// semdepth_core.nets.pac.PacConv2d: x and the guide are zero padded, f_i is the guide at the
// window centre (odd kernel_size), a neighbour outside the image contributes nothing (its x is 0).
//
// One pass per output element: the Gaussian kernel value of each tap is computed from the guide
// on the fly and immediately multiplies the tap's weighted input sum, so the k*k-unfolded input
// (k*k*Cin*H*W) and the kernel maps are never materialised. Templated on the storage type
// (float, __half); all arithmetic accumulates in float.
//
// Layout: NCHW, contiguous. Grid: x over output pixels (Ho*Wo), y over output channels, z over
// the batch, so all threads of a block share one output channel (uniform weight/bias loads).
//
// Built by nvcc into a shared library (semdepth_core/export/cuda_build.py, cached on disk) whose
// extern "C" host launcher the TensorRT plugin calls through ctypes with TensorRT's raw device
// pointers and cudaStream_t. Defining __CUDACC_RTC__ compiles the device code only (no host
// launcher, no cuda_runtime.h): an NVRTC compile, or the host-compiler emulation of the kernels in
// tests/test_cuda_kernel.py. The extern "C" __global__ entry points keep unmangled names.

#include <cuda_fp16.h>

namespace semdepth {

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__device__ __forceinline__ void pac_forward_impl(
    const T* __restrict__ x,          // [B, Cin, H, W]
    const T* __restrict__ guide,      // [B, D, H, W]
    const T* __restrict__ weight,     // [Cout, Cin, k, k]
    const T* __restrict__ bias,       // [Cout] or nullptr
    const T* __restrict__ log_sigma,  // [1] (per layer) or [Cout] (per filter)
    T* __restrict__ out,              // [B, Cout, Ho, Wo]
    int B, int Cin, int H, int W, int D, int Cout, int Ho, int Wo,
    int k, int stride, int padding, int dilation, int sigma_per_filter)
{
    const int pix = blockIdx.x * blockDim.x + threadIdx.x;
    const int o = blockIdx.y;
    const int b = blockIdx.z;
    if (pix >= Ho * Wo || o >= Cout || b >= B) return;
    const int ho = pix / Wo;
    const int wo = pix - ho * Wo;

    const long long HW = (long long)H * W;
    const T* xb = x + (long long)b * Cin * HW;
    const T* gb = guide + (long long)b * D * HW;
    const T* wo_ptr = weight + (long long)o * Cin * k * k;

    const float ls = to_float(log_sigma[sigma_per_filter ? o : 0]);
    const float coef = -0.5f * __expf(-2.0f * ls);  // -1/(2 sigma^2)

    // window centre (may lie in the zero padding for unusual padding/stride)
    const int c = (k - 1) / 2;
    const int yc = ho * stride - padding + c * dilation;
    const int xc = wo * stride - padding + c * dilation;
    const bool centre_in = (yc >= 0 && yc < H && xc >= 0 && xc < W);
    const long long centre_off = centre_in ? (long long)yc * W + xc : 0;

    float acc = bias ? to_float(bias[o]) : 0.0f;
    for (int a = 0; a < k; ++a) {
        const int yy = ho * stride - padding + a * dilation;
        if (yy < 0 || yy >= H) continue;  // x is zero there: no contribution
        for (int bb = 0; bb < k; ++bb) {
            const int xx = wo * stride - padding + bb * dilation;
            if (xx < 0 || xx >= W) continue;
            const long long off = (long long)yy * W + xx;
            // Gaussian kernel of Eq. 5 from the guide, on the fly
            float dist = 0.0f;
            for (int d = 0; d < D; ++d) {
                const float fc = centre_in ? to_float(gb[d * HW + centre_off]) : 0.0f;
                const float diff = fc - to_float(gb[d * HW + off]);
                dist = fmaf(diff, diff, dist);
            }
            const float kern = __expf(coef * dist);
            // weighted input sum of this tap
            const int tap = a * k + bb;
            float s = 0.0f;
            for (int ci = 0; ci < Cin; ++ci) {
                s = fmaf(to_float(wo_ptr[ci * k * k + tap]), to_float(xb[ci * HW + off]), s);
            }
            acc = fmaf(kern, s, acc);
        }
    }
    out[((long long)b * Cout + o) * Ho * Wo + pix] = from_float<T>(acc);
}

}  // namespace semdepth

#define SEMDEPTH_PAC_ARGS(T)                                                                   \
    const T* __restrict__ x, const T* __restrict__ guide, const T* __restrict__ weight,        \
    const T* __restrict__ bias, const T* __restrict__ log_sigma, T* __restrict__ out,          \
    int B, int Cin, int H, int W, int D, int Cout, int Ho, int Wo,                             \
    int k, int stride, int padding, int dilation, int sigma_per_filter

extern "C" __global__ void pac_conv2d_fwd_f32(SEMDEPTH_PAC_ARGS(float)) {
    semdepth::pac_forward_impl<float>(x, guide, weight, bias, log_sigma, out, B, Cin, H, W, D, Cout, Ho, Wo,
                                      k, stride, padding, dilation, sigma_per_filter);
}

extern "C" __global__ void pac_conv2d_fwd_f16(SEMDEPTH_PAC_ARGS(__half)) {
    semdepth::pac_forward_impl<__half>(x, guide, weight, bias, log_sigma, out, B, Cin, H, W, D, Cout, Ho, Wo,
                                       k, stride, padding, dilation, sigma_per_filter);
}

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

// Host launcher for nvcc builds (shared library / C++ plugin). dtype: 0 = float32, 1 = float16.
// Returns a cudaError_t value (0 = success; launch errors are reported, execution is async).
extern "C" int semdepth_pac_conv2d_forward(
    const void* x, const void* guide, const void* weight, const void* bias, const void* log_sigma, void* out,
    int B, int Cin, int H, int W, int D, int Cout, int k, int stride, int padding, int dilation,
    int sigma_per_filter, int dtype, cudaStream_t stream)
{
    if (k < 1 || (k % 2) == 0 || stride < 1 || dilation < 1 || padding < 0) return (int)cudaErrorInvalidValue;
    const int Ho = (H + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
    const int Wo = (W + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
    if (Ho <= 0 || Wo <= 0) return (int)cudaErrorInvalidValue;
    const int threads = 256;
    dim3 grid((Ho * Wo + threads - 1) / threads, Cout, B);
    if (dtype == 0) {
        pac_conv2d_fwd_f32<<<grid, threads, 0, stream>>>(
            (const float*)x, (const float*)guide, (const float*)weight, (const float*)bias,
            (const float*)log_sigma, (float*)out, B, Cin, H, W, D, Cout, Ho, Wo, k, stride, padding,
            dilation, sigma_per_filter);
    } else if (dtype == 1) {
        pac_conv2d_fwd_f16<<<grid, threads, 0, stream>>>(
            (const __half*)x, (const __half*)guide, (const __half*)weight, (const __half*)bias,
            (const __half*)log_sigma, (__half*)out, B, Cin, H, W, D, Cout, Ho, Wo, k, stride, padding,
            dilation, sigma_per_filter);
    } else {
        return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
}

// Message of a cudaError_t value returned by the launcher (static storage, never null).
extern "C" const char* semdepth_cuda_error_string(int code)
{
    return cudaGetErrorString((cudaError_t)code);
}
#endif  // __CUDACC_RTC__
