//! The cuda backend (in progress): kernels in `kernels/*.cu`, compiled at run
//! time by NVRTC. Host execution is not written yet; what exists is the kernel
//! source and its compilation, which CI checks for sm_80 and sm_90.

pub mod compile;
