//! Run-time compilation of `kernels/*.cu` with NVRTC, to CUBIN for the device's
//! own architecture (so an NVRTC newer than the driver is no problem).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use super::cache;
use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Whether libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's (major, minor) version, when the library loads.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the call only writes the two integers.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// Where `cuda_fp16.h` and `cuda_bf16.h` are (NVRTC 13.0 has them built in no
/// more), and `crt/mma.h` for the tensor-core kernels (pip ships it apart:
/// nvidia-cuda-crt for CUDA 13, nvidia-cuda-nvcc-cu12 for 12).
/// HEADROOM_CUDA_INCLUDE (a `:`-separated list) comes first; then CUDA_PATH,
/// CUDA_HOME, /usr/local/cuda and pip's nvidia packages.
pub fn include_paths() -> Vec<String> {
    let mut cands: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("HEADROOM_CUDA_INCLUDE") {
        cands.extend(p.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Ok(p) = std::env::var(var) {
            cands.push(format!("{p}/include"));
        }
    }
    cands.push("/usr/local/cuda/include".into());
    for site in python_site_dirs() {
        for sub in [
            "nvidia/cu13/include",
            "nvidia/cuda_runtime/include",
            "nvidia/cu12/include",
            "nvidia/cuda_nvcc/include",
        ] {
            cands.push(format!("{site}/{sub}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    cands
        .into_iter()
        .filter(|p| {
            let d = std::path::Path::new(p);
            d.join("cuda_fp16.h").exists() || d.join("crt/mma.h").exists()
        })
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn python_site_dirs() -> Vec<String> {
    let mut v = Vec::new();
    for root in ["/usr/local/lib", "/usr/lib", "/opt/torch/.venv/lib"] {
        if let Ok(d) = std::fs::read_dir(root) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("python3") {
                    for s in ["site-packages", "dist-packages"] {
                        v.push(format!("{root}/{name}/{s}"));
                    }
                }
            }
        }
    }
    v
}

fn nvrtc_err(file: &str, what: String) -> Error {
    Error::Kernel {
        op: "nvrtc",
        detail: format!("kernels/{file}.cu: {what}"),
    }
}

/// Compiles one kernel file (`kernels/<file>.cu`, its text `source`) to CUBIN
/// for `arch` (such as "sm_90"), or takes it from the on-disk cache
/// ([`super::cache`]) when the same source, architecture, NVRTC and options
/// made it before.
pub fn compile(file: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    let version = format!("{:?}", nvrtc_version());
    let opts = options(arch).join("\n");
    let key = cache::key(&[
        COMMON.as_bytes(),
        source.as_bytes(),
        version.as_bytes(),
        opts.as_bytes(),
    ]);
    if let Some(cubin) = cache::load(file, &key) {
        return Ok(cubin);
    }
    let cubin = build(file, source, arch, false)?.cubin;
    cache::store(file, &key, &cubin);
    Ok(cubin)
}

/// [`compile`], once per process for each file, source and architecture:
/// every backend opened later (tests open dozens) loads the same CUBIN, and
/// a caller asking for a file another thread is compiling waits for it
/// ([`prewarm`] compiles them all at once).
pub fn compile_shared(file: &str, source: &str, arch: &str) -> Result<Arc<Vec<u8>>> {
    type Once = Arc<OnceLock<std::result::Result<Arc<Vec<u8>>, String>>>;
    type Compiled = Mutex<HashMap<(String, String, u64), Once>>;
    static DONE: OnceLock<Compiled> = OnceLock::new();
    let key = (file.to_string(), arch.to_string(), source_hash(source));
    let once = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    // Outside the map's lock: other files compile meanwhile.
    once.get_or_init(|| {
        compile(file, source, arch)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|detail| Error::Kernel {
        op: "nvrtc",
        detail,
    })
}

/// Compiles every kernel file for `arch` on threads of its own, so that the
/// first step waits for the slowest file rather than for all of them in turn
/// (NVRTC takes 10-20 s for all of them on one core).
pub fn prewarm(arch: &str) {
    for k in super::ops::FAMILIES {
        let arch = arch.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("nvrtc-{}", k.file))
            .spawn(move || {
                if let Err(e) = compile_shared(k.file, k.source, &arch) {
                    log::debug!("prewarming kernels/{}.cu: {e}", k.file);
                }
            });
        if spawned.is_err() {
            return; // compiled at first use instead
        }
    }
}

fn source_hash(source: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

/// NVRTC's options for `arch`, the include paths found now among them.
fn options(arch: &str) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    opts.extend(
        include_paths()
            .into_iter()
            .map(|p| format!("--include-path={p}")),
    );
    opts
}

/// What NVRTC made of one kernel file.
pub struct Compiled {
    /// The CUBIN the backend loads.
    pub cubin: Vec<u8>,
    /// The PTX of the same compilation (its `.entry` lines name the kernels).
    pub ptx: String,
}

/// [`compile`], keeping the PTX too: tests read the module's entry points from it.
pub fn compile_with_ptx(file: &str, source: &str, arch: &str) -> Result<Compiled> {
    build(file, source, arch, true)
}

fn build(file: &str, src: &str, arch: &str, want_ptx: bool) -> Result<Compiled> {
    use cudarc::nvrtc::result;
    if !nvrtc_available() {
        return Err(Error::Unsupported {
            backend: "cuda",
            what: "kernel compilation: libnvrtc was not found".into(),
            hint: "install the CUDA toolkit or pip's nvidia-cuda-nvrtc, and put its lib directory on LD_LIBRARY_PATH",
        });
    }
    let code =
        CString::new(format!("{COMMON}\n{src}")).map_err(|e| nvrtc_err(file, e.to_string()))?;
    let name = CString::new(format!("{file}.cu")).map_err(|e| nvrtc_err(file, e.to_string()))?;
    let prog = result::create_program(&code, Some(&name))
        .map_err(|e| nvrtc_err(file, format!("{e:?}")))?;
    let opts = options(arch);
    // SAFETY: prog is a live program; options are plain strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        // SAFETY: the program compiled; it is destroyed only below.
        Ok(()) => unsafe {
            cubin(prog, file).and_then(|cubin| {
                let ptx = if want_ptx {
                    ptx(prog, file)?
                } else {
                    String::new()
                };
                Ok(Compiled { cubin, ptx })
            })
        },
        Err(e) => {
            // SAFETY: the program exists; the log is a C string.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> =
                        l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .unwrap_or_default();
            Err(nvrtc_err(file, format!("{e:?} with {opts:?}:\n{log}")))
        }
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The CUBIN of a compiled program.
///
/// # Safety
/// `prog` is a live, successfully compiled program.
unsafe fn cubin(prog: cudarc::nvrtc::sys::nvrtcProgram, file: &str) -> Result<Vec<u8>> {
    use cudarc::nvrtc::sys;
    let mut size = 0usize;
    let r = sys::nvrtcGetCUBINSize(prog, &mut size);
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err(file, format!("cubin size: {r:?}")));
    }
    let mut buf = vec![0u8; size];
    let r = sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char);
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err(file, format!("cubin: {r:?}")));
    }
    Ok(buf)
}

/// The PTX of a compiled program, without its terminating NUL.
///
/// # Safety
/// `prog` is a live, successfully compiled program.
unsafe fn ptx(prog: cudarc::nvrtc::sys::nvrtcProgram, file: &str) -> Result<String> {
    use cudarc::nvrtc::sys;
    let mut size = 0usize;
    let r = sys::nvrtcGetPTXSize(prog, &mut size);
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err(file, format!("ptx size: {r:?}")));
    }
    let mut buf = vec![0u8; size];
    let r = sys::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut std::ffi::c_char);
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err(file, format!("ptx: {r:?}")));
    }
    let text = buf.split(|&c| c == 0).next().unwrap_or_default();
    Ok(String::from_utf8_lossy(text).into_owned())
}
