//! Locating (and, as a last resort, provisioning) the ONNX Runtime shared library.
//!
//! Search order:
//! 1. `--ort-lib PATH` ([`RuntimeOptions::ort_lib`](super::RuntimeOptions::ort_lib));
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. next to the executable (`<exe dir>/libonnxruntime.so*` or `<exe dir>/lib/`);
//! 4. an installed Python `onnxruntime` / `onnxruntime-gpu` package: `tools/.venv` of the
//!    repository the binary was built from, `tools/.venv` of the current directory, then the
//!    `python3` on `PATH`;
//! 5. the user cache `<cache dir>/anchorkit/onnxruntime-<ver>/`;
//! 6. otherwise the pinned wheel is downloaded with pip and its `onnxruntime/capi/*.so*` files
//!    are extracted into the user cache (atomically), with a note on stderr.

use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ONNX Runtime version provisioned into the cache when no library is found.
pub const PINNED_ORT_VERSION: &str = "1.32.0";
/// Lowest ONNX Runtime minor version that `ort` 2.0.0-rc.15 (`api-31`) accepts.
pub const MIN_ORT_MINOR: u32 = 31;

/// Where a library was found; printed by `anchorkit inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibSource {
    /// `--ort-lib`.
    Flag,
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// Next to the executable.
    ExeDir,
    /// An installed Python onnxruntime package (the string says which Python / venv).
    Python(String),
    /// The user cache.
    Cache,
    /// Freshly provisioned into the user cache by pip.
    Provisioned,
}

impl std::fmt::Display for LibSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LibSource::Flag => write!(f, "--ort-lib"),
            LibSource::EnvVar => write!(f, "ORT_DYLIB_PATH"),
            LibSource::ExeDir => write!(f, "next to the executable"),
            LibSource::Python(p) => write!(f, "Python onnxruntime package ({p})"),
            LibSource::Cache => write!(f, "user cache"),
            LibSource::Provisioned => write!(f, "provisioned into the user cache by pip"),
        }
    }
}

/// The cache directory for the pinned library: `<cache dir>/anchorkit/onnxruntime-<ver>/`.
pub fn cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| {
        d.join("anchorkit")
            .join(format!("onnxruntime-{PINNED_ORT_VERSION}"))
    })
}

/// Finds libonnxruntime in the documented order, provisioning it with pip if nothing is found.
///
/// Errors: an explicit `--ort-lib` / `ORT_DYLIB_PATH` that does not exist; pip missing or
/// failing during provisioning (the message gives the exact command to run by hand).
pub fn locate(flag: Option<&Path>) -> Result<(PathBuf, LibSource)> {
    if let Some(p) = flag {
        return explicit(p, "--ort-lib").map(|p| (p, LibSource::Flag));
    }
    if let Some(v) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return explicit(Path::new(&v), "ORT_DYLIB_PATH").map(|p| (p, LibSource::EnvVar));
    }
    if let Some(p) = find_without_provisioning() {
        return Ok(p);
    }
    provision().map(|p| (p, LibSource::Provisioned))
}

/// Steps 3-5 of the search (no explicit path, no provisioning).
pub fn find_without_provisioning() -> Option<(PathBuf, LibSource)> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for d in [dir.clone(), dir.join("lib")] {
            if let Some(p) = lib_in_dir(&d) {
                return Some((p, LibSource::ExeDir));
            }
        }
    }
    let mut venvs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/.venv")];
    if let Ok(cwd) = std::env::current_dir() {
        venvs.push(cwd.join("tools/.venv"));
    }
    for venv in venvs {
        if let Some(p) = lib_in_venv(&venv) {
            return Some((p, LibSource::Python(venv.display().to_string())));
        }
    }
    if let Some(p) =
        python_package_dir("python3", "onnxruntime").and_then(|d| lib_in_dir(&d.join("capi")))
    {
        return Some((p, LibSource::Python("python3 on PATH".into())));
    }
    cache_dir()
        .and_then(|d| lib_in_dir(&d))
        .map(|p| (p, LibSource::Cache))
}

fn explicit(p: &Path, what: &str) -> Result<PathBuf> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else if p.is_dir() {
        lib_in_dir(p).or_else(|| lib_in_dir(&p.join("capi"))).ok_or_else(|| {
            Error::Runtime(format!(
                "{what} {}: directory contains no libonnxruntime.so.1.{MIN_ORT_MINOR}+ (pass the library file itself)",
                p.display()
            ))
        })
    } else {
        Err(Error::Runtime(format!(
            "{what} {}: no such file (pass the path of libonnxruntime.so.1.x, e.g. \
             <venv>/lib/python3.X/site-packages/onnxruntime/capi/libonnxruntime.so.{PINNED_ORT_VERSION})",
            p.display()
        )))
    }
}

/// Parses `libonnxruntime.so.1.32.0` (or `.dylib` / `.dll` variants) into (major, minor).
fn version_of(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("libonnxruntime.so.")?;
    let mut it = rest.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The newest acceptable `libonnxruntime.so.1.N[.x]` (N >= 31) in `dir`, else an unversioned
/// `libonnxruntime.so` (its version is checked at load time).
pub fn lib_in_dir(dir: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(dir).ok()?;
    let mut best: Option<((u32, u32), PathBuf)> = None;
    let mut plain = None;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "libonnxruntime.so"
            || name == "libonnxruntime.dylib"
            || name == "onnxruntime.dll"
        {
            plain = Some(e.path());
        } else if let Some(v) = version_of(&name)
            && v.0 == 1
            && v.1 >= MIN_ORT_MINOR
            && best.as_ref().is_none_or(|(bv, _)| v > *bv)
        {
            best = Some((v, e.path()));
        }
    }
    best.map(|(_, p)| p).or(plain)
}

fn lib_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let rd = std::fs::read_dir(&lib).ok()?;
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("python") {
            let site = e.path().join("site-packages");
            for pkg in ["onnxruntime"] {
                if let Some(p) = lib_in_dir(&site.join(pkg).join("capi")) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Asks `python` where package `pkg` lives without importing it (fast).
pub(crate) fn python_package_dir(python: &str, pkg: &str) -> Option<PathBuf> {
    let code = format!(
        "import importlib.util as u\ns = u.find_spec('{pkg}')\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    );
    let out = Command::new(python)
        .args(["-c", &code])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// The pip command that provisions the pinned wheel into `dir`.
pub fn pip_command(dir: &Path) -> String {
    format!(
        "python3 -m pip download --no-deps --only-binary=:all: onnxruntime=={PINNED_ORT_VERSION} -d {}",
        dir.display()
    )
}

/// Downloads the pinned `onnxruntime` wheel with pip and extracts its `onnxruntime/capi/*.so*`
/// into [`cache_dir`], atomically (extract into a temp dir beside it, then rename).
///
/// Errors: no cache dir, pip missing (message gives the command to run and where to put the
/// files), pip failing, a wheel without the library.
pub fn provision() -> Result<PathBuf> {
    let dest = cache_dir().ok_or_else(|| {
        Error::Runtime(
            "libonnxruntime not found and no user cache directory to provision it into; \
             pass --ort-lib PATH or set ORT_DYLIB_PATH"
                .into(),
        )
    })?;
    let parent = dest.parent().expect("cache dir has a parent").to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let dl = tempfile::Builder::new()
        .prefix(".wheel-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let manual = format!(
        "run `{}` and unzip its onnxruntime/capi/*.so* into {} (or pass --ort-lib PATH / set ORT_DYLIB_PATH)",
        pip_command(Path::new("WHEEL_DIR")),
        dest.display()
    );
    let pip_ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !pip_ok {
        return Err(Error::Runtime(format!(
            "libonnxruntime not found (searched --ort-lib, ORT_DYLIB_PATH, the executable's directory, \
             Python onnxruntime packages, {}) and `python3 -m pip` is not available to provision it: {manual}",
            dest.display()
        )));
    }
    eprintln!(
        "anchorkit: libonnxruntime not found; provisioning onnxruntime=={PINNED_ORT_VERSION} with pip into {}",
        dest.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            &format!("onnxruntime=={PINNED_ORT_VERSION}"),
            "-d",
        ])
        .arg(dl.path())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::Runtime(format!("running pip failed: {e}; {manual}")))?;
    if !status.success() {
        return Err(Error::Runtime(format!(
            "pip could not download onnxruntime=={PINNED_ORT_VERSION} ({status}); {manual}"
        )));
    }
    let wheel = std::fs::read_dir(dl.path())
        .map_err(|e| Error::io(dl.path(), e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Runtime(format!("pip produced no wheel; {manual}")))?;
    let lib = extract_capi(&wheel, &dest)?;
    eprintln!(
        "anchorkit: ONNX Runtime {PINNED_ORT_VERSION} installed at {}",
        lib.display()
    );
    Ok(lib)
}

/// Extracts `onnxruntime/capi/*.so*` of a wheel into `dest` atomically and returns the library.
///
/// Errors: unreadable or malformed wheel, no `libonnxruntime.so*` inside, I/O errors.
pub fn extract_capi(wheel: &Path, dest: &Path) -> Result<PathBuf> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let bad =
        |e: zip::result::ZipError| Error::Runtime(format!("{}: bad wheel: {e}", wheel.display()));
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let tmp = tempfile::Builder::new()
        .prefix(".onnxruntime-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let mut n = 0;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(bad)?;
        let name = f.name().map_err(bad)?.into_owned();
        let Some(base) = name.strip_prefix("onnxruntime/capi/") else {
            continue;
        };
        if base.contains('/') || !base.contains(".so") {
            continue;
        }
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| Error::Runtime(format!("{}: {name}: {e}", wheel.display())))?;
        let out = tmp.path().join(base);
        std::fs::write(&out, &buf).map_err(|e| Error::io(&out, e))?;
        n += 1;
    }
    if n == 0 || lib_in_dir(tmp.path()).is_none() {
        return Err(Error::Runtime(format!(
            "{}: wheel has no onnxruntime/capi/libonnxruntime.so.1.{MIN_ORT_MINOR}+",
            wheel.display()
        )));
    }
    let staged = tmp.keep();
    if dest.exists() {
        // Another process won the race (or a stale, incomplete dir): keep a complete one.
        if lib_in_dir(dest).is_some() {
            let _ = std::fs::remove_dir_all(&staged);
            return lib_in_dir(dest).ok_or_else(|| Error::Runtime("cache vanished".into()));
        }
        std::fs::remove_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    }
    std::fs::rename(&staged, dest).map_err(|e| Error::io(dest, e))?;
    lib_in_dir(dest)
        .ok_or_else(|| Error::Runtime(format!("{}: no library after extraction", dest.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_library_versions() {
        assert_eq!(version_of("libonnxruntime.so.1.32.0"), Some((1, 32)));
        assert_eq!(version_of("libonnxruntime.so.1"), None);
        assert_eq!(version_of("libonnxruntime_providers_shared.so"), None);
    }

    #[test]
    fn picks_newest_acceptable_version_in_dir() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "libonnxruntime.so.1.30.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        assert_eq!(
            lib_in_dir(d.path()).unwrap(),
            d.path().join("libonnxruntime.so.1.32.0")
        );
        let e = tempfile::tempdir().unwrap();
        std::fs::write(e.path().join("libonnxruntime.so.1.30.0"), b"").unwrap();
        assert_eq!(lib_in_dir(e.path()), None);
    }

    #[test]
    fn extracts_capi_from_a_wheel_atomically() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let wheel = d.path().join("onnxruntime-1.32.0-cp311-none-any.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (n, body) in [
            (
                "onnxruntime/capi/libonnxruntime.so.1.32.0",
                b"lib".as_slice(),
            ),
            (
                "onnxruntime/capi/libonnxruntime_providers_shared.so",
                b"prov",
            ),
            ("onnxruntime/capi/_pybind_state.py", b"py"),
            ("onnxruntime/__init__.py", b"py"),
        ] {
            z.start_file(n, opts).unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap();
        let dest = d.path().join("cache/onnxruntime-1.32.0");
        let lib = extract_capi(&wheel, &dest).unwrap();
        assert_eq!(lib, dest.join("libonnxruntime.so.1.32.0"));
        assert_eq!(std::fs::read(&lib).unwrap(), b"lib");
        let mut names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "libonnxruntime.so.1.32.0",
                "libonnxruntime_providers_shared.so"
            ]
        );
        // Nothing staged is left behind next to the destination.
        let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn wheel_without_library_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let wheel = d.path().join("x.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        z.start_file(
            "onnxruntime/__init__.py",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.finish().unwrap();
        let e = extract_capi(&wheel, &d.path().join("c/ort")).unwrap_err();
        assert!(
            e.to_string()
                .contains("has no onnxruntime/capi/libonnxruntime"),
            "{e}"
        );
        assert!(!d.path().join("c/ort").exists());
    }

    /// Downloads the pinned wheel with pip (network) into a temporary cache and checks the
    /// extracted library. Run with `cargo test --lib provision -- --ignored`.
    #[test]
    #[ignore = "downloads the onnxruntime wheel with pip"]
    fn provision_downloads_and_extracts_the_pinned_wheel() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: ignored test, run on its own; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var("XDG_CACHE_HOME", d.path()) };
        let lib = provision().unwrap();
        assert_eq!(
            lib,
            d.path().join(format!(
                "anchorkit/onnxruntime-{PINNED_ORT_VERSION}/libonnxruntime.so.{PINNED_ORT_VERSION}"
            ))
        );
        assert_eq!(&std::fs::read(&lib).unwrap()[..4], b"\x7fELF");
        assert!(
            lib.with_file_name("libonnxruntime_providers_shared.so")
                .is_file()
        );
        // A second lookup finds it in the cache without pip.
        assert_eq!(lib_in_dir(&cache_dir().unwrap()), Some(lib));
    }
}
