//! Opening a disk: from an already-open file ([`open_file`]) or a path
//! ([`open_path`]), with its format decided safely, its lock taken, and,
//! for qcow2, its backing chain opened through a [`BackingOpener`].
//!
//! The split exists for privilege separation: `vtd` opens each image as
//! the calling user and passes the fd to a jailed VMM, which cannot open
//! paths itself; backing files then come through an opener that `vtd`
//! controls too (or over fds it passed). [`PathOpener`] is the default,
//! used by `vt-vmm --disk path=` and `vt image`.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::check;
use crate::header::{Header, HeaderError};
use crate::lock::{self, LockError, LockMode};
use crate::probe::{self, Probed};
use crate::qcow2::{self, Layer, Qcow2};
use crate::raw::{self, RawError, RawFile};
use crate::{CacheMode, DiskBackend, DiskFormat, SECTOR_SIZE};

/// Longest backing chain below an image (QEMU has no fixed limit; a real
/// chain is a few layers, and this bounds the work a hostile image causes).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// An open image file and how to name it.
#[derive(Debug)]
pub struct ImageFile {
    /// The file, open for reading (and writing, for a writable top image).
    pub file: File,
    /// What errors call it (usually its path).
    pub name: String,
    /// The directory relative backing names are resolved against (the
    /// image's own directory).
    pub dir: PathBuf,
}

impl ImageFile {
    /// Opens `path` for reading, and writing unless `readonly`.
    pub fn open(path: &Path, readonly: bool) -> Result<ImageFile, OpenError> {
        let name = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|e| OpenError::Open(name.clone(), e))?;
        Ok(ImageFile {
            file,
            name,
            dir: parent(path),
        })
    }
}

/// The directory of `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How to open a disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Open read-only (shared lock) instead of writable (exclusive lock).
    pub readonly: bool,
    /// `cache=none` (O_DIRECT) or the page cache.
    pub cache: CacheMode,
    /// The format; `None` probes, and refuses a writable image that looks
    /// like anything but raw.
    pub format: Option<DiskFormat>,
    /// Take no locks (`shareable=on`: the user shares the disk on purpose).
    pub shareable: bool,
}

/// Opens the backing files a qcow2 header names.
pub trait BackingOpener {
    /// Opens, read-only, the backing file `reference` (exactly as stored
    /// in the qcow2 header) of an image whose directory is `dir`. Must
    /// return a regular file (never a device, FIFO or directory); the
    /// returned [`ImageFile::dir`] resolves the next layer's reference.
    /// An error says why in one line (`io::Error::other` for policy).
    fn open_backing(&mut self, reference: &str, dir: &Path) -> io::Result<ImageFile>;
}

/// The default [`BackingOpener`]: a relative reference is resolved
/// against the image's directory, an absolute one is taken as is; only
/// regular files are opened (checked before opening, so a device or FIFO
/// is never even opened, and again on the opened file).
#[derive(Debug, Default, Clone, Copy)]
pub struct PathOpener;

impl BackingOpener for PathOpener {
    fn open_backing(&mut self, reference: &str, dir: &Path) -> io::Result<ImageFile> {
        let path = dir.join(reference);
        let not_file = || io::Error::other("not a regular file");
        if !std::fs::metadata(&path)?.is_file() {
            return Err(not_file());
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(not_file());
        }
        Ok(ImageFile {
            file,
            name: path.display().to_string(),
            dir: parent(&path),
        })
    }
}

/// The backing files below the image at `path`, top-down, as
/// [`PathOpener`] would resolve them: what a sandbox must let the VMM
/// read, or what a manager opens for a jailed one. Best effort: it stops
/// at the first layer that cannot be read or is not qcow2, and after
/// [`MAX_CHAIN_DEPTH`] layers; opening the disk reports the errors.
pub fn backing_chain(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut current = path.to_path_buf();
    while out.len() < MAX_CHAIN_DEPTH {
        let Ok(file) = File::open(&current) else {
            break;
        };
        let Ok(header) = crate::header::Header::read(&file) else {
            break;
        };
        let Some(reference) = header.backing_file else {
            break;
        };
        let next = parent(&current).join(reference);
        if out.contains(&next) {
            break;
        }
        out.push(next.clone());
        current = next;
    }
    out
}

/// A [`BackingOpener`] over files opened in advance, in chain order (the
/// first backing file, then its backing file, …): a jailed VMM has no path
/// to its images, so its manager walks the chain, opens every layer as the
/// VM's owner and passes them in. The reference each image names is still
/// checked by the caller ([`open_file`]: format from the header, loops,
/// depth); a chain longer than the files given is refused.
#[derive(Debug, Default)]
pub struct PassedOpener {
    files: std::collections::VecDeque<File>,
}

impl PassedOpener {
    /// The backing files, top-down.
    pub fn new(files: Vec<File>) -> Self {
        PassedOpener {
            files: files.into(),
        }
    }
}

impl BackingOpener for PassedOpener {
    fn open_backing(&mut self, reference: &str, _dir: &Path) -> io::Result<ImageFile> {
        let file = self.files.pop_front().ok_or_else(|| {
            io::Error::other("no backing file was passed in for it (the manager opens the chain)")
        })?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(ImageFile {
            file,
            name: reference.to_string(),
            dir: PathBuf::from("/"),
        })
    }
}

/// Why a disk could not be opened. Messages name the image.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {0}")]
    Open(String, #[source] io::Error),
    #[error("disk {0}")]
    Raw(String, #[source] RawError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read {0}")]
    Probe(String, #[source] io::Error),
    #[error("disk {0} looks like a {1} image but no format was given; pass format={1} to use it as {1}, or format=raw to give the guest its bytes (header included)")]
    Unsafe(String, &'static str),
    #[error("disk {0} looks like a {1} image, which is not supported (raw and qcow2 are); pass format=raw to give the guest its bytes")]
    Unsupported(String, &'static str),
    #[error("disk {0} is not a qcow2 image (format=qcow2 was given)")]
    NotQcow2(String),
    #[error("disk {0}")]
    Header(String, #[source] HeaderError),
    #[error("disk {0}: backing file '{1}' has no format in the image header; refusing to probe it (set one with `qemu-img rebase -u -F raw|qcow2`)")]
    NoBackingFormat(String, String),
    #[error("disk {0}: backing format '{2}' of '{1}' is not supported (raw and qcow2 are)")]
    BackingFormat(String, String, String),
    #[error("disk {0}: cannot open backing file '{1}'")]
    Backing(String, String, #[source] io::Error),
    #[error("disk {0}: backing chain deeper than {MAX_CHAIN_DEPTH}")]
    Depth(String),
    #[error("disk {0}: backing chain loops back to '{1}'")]
    Loop(String, String),
    #[error("disk {0}: qcow2")]
    Qcow2(String, #[source] io::Error),
    #[error("disk {0}: size {1} is not a multiple of 512 bytes")]
    Size(String, u64),
    #[error("disk {0}: cannot check the image before writing to it")]
    Check(String, #[source] Box<check::CheckError>),
    #[error(
        "disk {0}: {1} metadata errors, refusing to write to it (first: {2}); see `vt image check`"
    )]
    Inconsistent(String, u64, String),
}

impl OpenError {
    /// True when the user can fix it (bad file, format, lock held), false
    /// for host failures.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, OpenError::Probe(..))
    }
}

/// Opens the disk in `image` (already open: readable, and writable unless
/// `opts.readonly`), taking its lock unless `opts.shareable`, deciding its
/// format (see [`OpenOptions::format`]), and opening a qcow2's backing
/// chain through `opener`. The lock lives as long as the returned backend
/// (and any other fd of the same open file).
pub fn open_file(
    image: ImageFile,
    opts: &OpenOptions,
    opener: &mut dyn BackingOpener,
) -> Result<Box<dyn DiskBackend>, OpenError> {
    open_file_twin(image, None, opts, opener)
}

/// [`open_file`], with `cache=none`'s O_DIRECT handle on the same file
/// given (`direct`) instead of reopened through `/proc/self/fd`: what a
/// jailed VMM needs, which has no `/proc` and no right to reopen the
/// files its manager passed in.
pub fn open_file_twin(
    image: ImageFile,
    direct: Option<File>,
    opts: &OpenOptions,
    opener: &mut dyn BackingOpener,
) -> Result<Box<dyn DiskBackend>, OpenError> {
    let mut locked = Vec::new();
    let r = open_locked(image, direct, opts, opener, &mut locked);
    if r.is_err() {
        locked.iter().for_each(lock::unlock);
    }
    Ok(match r? {
        Image::Raw(r) => Box::new(r),
        Image::Qcow2(q) => Box::new(q),
    })
}

/// An opened disk by its format, for tools that need more than
/// [`DiskBackend`] (resizing, say).
pub enum Image {
    /// A raw file or block device.
    Raw(RawFile),
    /// A qcow2 image with its backing chain.
    Qcow2(Qcow2),
}

/// [`open_file`], keeping the format's own type.
///
/// On an error, the locks this call took are released again, even when
/// the caller (or the opener) keeps other fds of the same open files.
pub fn open_image(
    image: ImageFile,
    opts: &OpenOptions,
    opener: &mut dyn BackingOpener,
) -> Result<Image, OpenError> {
    let mut locked = Vec::new();
    let r = open_locked(image, None, opts, opener, &mut locked);
    if r.is_err() {
        locked.iter().for_each(lock::unlock);
    }
    r
}

/// Locks `file` in `mode` unless shareable, and keeps a handle on it in
/// `locked` (to unlock it if the open fails later).
fn lock_layer(
    file: &File,
    name: &str,
    mode: LockMode,
    shareable: bool,
    locked: &mut Vec<File>,
) -> Result<(), OpenError> {
    if shareable {
        return Ok(());
    }
    lock::lock(file, name, mode)?;
    if let Ok(f) = file.try_clone() {
        locked.push(f);
    }
    Ok(())
}

fn open_locked(
    image: ImageFile,
    direct_file: Option<File>,
    opts: &OpenOptions,
    opener: &mut dyn BackingOpener,
    locked: &mut Vec<File>,
) -> Result<Image, OpenError> {
    let ImageFile { file, name, dir } = image;
    raw::file_size(&file).map_err(|e| OpenError::Raw(name.clone(), e))?;
    let mode = if opts.readonly {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    lock_layer(&file, &name, mode, opts.shareable, locked)?;
    let probed = probe::probe(&file).map_err(|e| OpenError::Probe(name.clone(), e))?;
    let format = match (opts.format, probed) {
        (Some(DiskFormat::Raw), _) => DiskFormat::Raw,
        (Some(DiskFormat::Qcow2), Probed::Qcow2) => DiskFormat::Qcow2,
        (Some(DiskFormat::Qcow2), _) => return Err(OpenError::NotQcow2(name)),
        (None, Probed::Raw) => DiskFormat::Raw,
        (None, Probed::Qcow2) if !opts.readonly => return Err(OpenError::Unsafe(name, "qcow2")),
        (None, Probed::Qcow2) => DiskFormat::Qcow2,
        (None, Probed::Other(f)) if !opts.readonly => return Err(OpenError::Unsafe(name, f)),
        (None, Probed::Other(f)) => return Err(OpenError::Unsupported(name, f)),
    };
    match format {
        DiskFormat::Raw => {
            let raw = match (opts.cache, direct_file) {
                (CacheMode::Direct, Some(d)) => RawFile::from_files(file, Some(d)),
                (cache, _) => RawFile::from_file(file, opts.readonly, cache == CacheMode::Direct),
            }
            .map_err(|e| OpenError::Raw(name, e))?;
            Ok(Image::Raw(raw))
        }
        DiskFormat::Qcow2 => {
            // cache=none: imago works on an O_DIRECT handle of the image
            // (backing files stay on the page cache); the locked buffered
            // handle is kept open with it.
            let direct = match (opts.cache, direct_file) {
                (CacheMode::Direct, Some(d)) => Some(d),
                (CacheMode::Direct, None) => Some(
                    raw::reopen_direct(&file, opts.readonly)
                        .map_err(|e| OpenError::Raw(name.clone(), RawError::NoDirect(e)))?,
                ),
                _ => None,
            };
            let holder = match &direct {
                Some(_) => Some(
                    file.try_clone()
                        .map_err(|e| OpenError::Open(name.clone(), e))?,
                ),
                None => None,
            };
            let mut chain = Chain {
                opener,
                shareable: opts.shareable,
                seen: HashSet::new(),
                locked,
            };
            let top = ImageFile { file, name, dir };
            let name = top.name.clone();
            let layer = chain.qcow2(top, !opts.readonly, 0, direct)?;
            let q = match holder {
                Some(h) => Qcow2::with_lock_holder(layer, h),
                None => Qcow2::new(layer),
            };
            if !q.size().is_multiple_of(SECTOR_SIZE) {
                return Err(OpenError::Size(name, q.size()));
            }
            Ok(Image::Qcow2(q))
        }
    }
}

/// [`open_file`] on a path, with the default [`PathOpener`].
pub fn open_path(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskBackend>, OpenError> {
    let image = ImageFile::open(path, opts.readonly)?;
    open_file(image, opts, &mut PathOpener)
}

/// Opens a qcow2 chain layer by layer, top down.
struct Chain<'a> {
    opener: &'a mut dyn BackingOpener,
    shareable: bool,
    /// (device, inode) of every layer so far: a layer seen twice is a loop.
    seen: HashSet<(u64, u64)>,
    /// Handles on the files locked so far.
    locked: &'a mut Vec<File>,
}

impl Chain<'_> {
    fn identity(&mut self, f: &ImageFile) -> Result<(), OpenError> {
        let m = f
            .file
            .metadata()
            .map_err(|e| OpenError::Open(f.name.clone(), e))?;
        if !self.seen.insert((m.dev(), m.ino())) {
            return Err(OpenError::Loop(f.name.clone(), f.name.clone()));
        }
        Ok(())
    }

    /// Opens `image` (a qcow2 file) at `depth` below the top, with its
    /// backing chain; `direct`: an O_DIRECT handle on the same file for
    /// imago's I/O (the checks read through `image.file`).
    fn qcow2(
        &mut self,
        image: ImageFile,
        writable: bool,
        depth: usize,
        direct: Option<File>,
    ) -> Result<Layer, OpenError> {
        self.identity(&image)?;
        let read =
            |f: &ImageFile| Header::read(&f.file).map_err(|e| OpenError::Header(f.name.clone(), e));
        let mut header = read(&image)?;
        if writable && header.dirty() && !header.corrupt() {
            // Left dirty (lazy refcounts, a writer that did not close): as
            // QEMU does on the first writable open, rebuild the refcounts
            // from the tables (`check -r all`), which clears the bit.
            let report = check::check_file(&image.file, &image.name, check::Repair::All)
                .map_err(|e| OpenError::Check(image.name.clone(), Box::new(e)))?;
            log::info!(
                "{}: dirty image repaired ({} refcounts fixed)",
                image.name,
                report.corruptions_fixed + report.leaks_fixed
            );
            header = read(&image)?;
        }
        header
            .check_usable()
            .map_err(|e| OpenError::Header(image.name.clone(), e))?;
        if writable {
            // imago trusts the refcount structure when it allocates (a
            // hostile one sent it into unbounded recursion under the fuzzer):
            // a writable image must be consistent first, as `check` sees it.
            let report = check::check_file(&image.file, &image.name, check::Repair::None)
                .map_err(|e| OpenError::Check(image.name.clone(), Box::new(e)))?;
            if report.corruptions > 0 {
                let first = report.messages.iter().find(|m| m.starts_with("ERROR"));
                let first = first.map_or("", |m| m.as_str()).to_string();
                return Err(OpenError::Inconsistent(
                    image.name,
                    report.corruptions,
                    first,
                ));
            }
        }
        let backing = match &header.backing_file {
            None => None,
            Some(reference) => Some(self.backing(&image, reference, &header, depth)?),
        };
        let path = PathBuf::from(&image.name);
        let (file, is_direct) = match direct {
            Some(d) => (d, true),
            None => (image.file, false),
        };
        qcow2::qcow2_layer(file, &path, writable, backing, is_direct)
            .map_err(|e| OpenError::Qcow2(image.name, e))
    }

    fn backing(
        &mut self,
        image: &ImageFile,
        reference: &str,
        header: &Header,
        depth: usize,
    ) -> Result<Layer, OpenError> {
        let name = || image.name.clone();
        let format = match header.backing_format.as_deref() {
            Some("qcow2") => DiskFormat::Qcow2,
            Some("raw") | Some("file") => DiskFormat::Raw,
            Some(other) => {
                return Err(OpenError::BackingFormat(
                    name(),
                    reference.into(),
                    other.into(),
                ))
            }
            None => return Err(OpenError::NoBackingFormat(name(), reference.into())),
        };
        if depth + 1 > MAX_CHAIN_DEPTH {
            return Err(OpenError::Depth(name()));
        }
        let below = self
            .opener
            .open_backing(reference, &image.dir)
            .map_err(|e| OpenError::Backing(name(), reference.into(), e))?;
        lock_layer(
            &below.file,
            &below.name,
            LockMode::Shared,
            self.shareable,
            self.locked,
        )?;
        match format {
            DiskFormat::Qcow2 => {
                if probe::probe(&below.file).ok() != Some(Probed::Qcow2) {
                    return Err(OpenError::NotQcow2(below.name));
                }
                self.qcow2(below, false, depth + 1, None)
                    .map_err(|e| match e {
                        OpenError::Loop(_, at) => OpenError::Loop(name(), at),
                        e => e,
                    })
            }
            DiskFormat::Raw => {
                self.identity(&below)?;
                let path = PathBuf::from(&below.name);
                qcow2::raw_layer(below.file, &path).map_err(|e| OpenError::Qcow2(below.name, e))
            }
        }
    }
}
