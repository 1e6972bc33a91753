//! Creating images (`vt image create`, `vt create --disk ...,size=`), with
//! qemu-img's options: raw or qcow2, a backing file with its format, the
//! cluster size, preallocation and lazy refcounts.
//!
//! qcow2 images are written by imago (version 3, 16-bit refcounts; for
//! `compat=0.10` we then rewrite the new header as version 2); the
//! lazy-refcounts bit is then set in the header (our writer keeps
//! refcounts up to date anyway, so the flag only tells other writers they
//! may be lazy).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::format::PreallocateMode;
use imago::qcow2::Qcow2 as ImagoQcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use crate::header::{self, Header};
use crate::open::{OpenError, OpenOptions, PathOpener};
use crate::{lock, DiskFormat, SECTOR_SIZE};

/// qemu-img's `preallocation=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// Nothing allocated (sparse).
    #[default]
    Off,
    /// qcow2: every L2 table and data cluster mapped, data not written.
    Metadata,
    /// Everything allocated and written (zeros).
    Full,
}

impl Preallocation {
    /// Parses `off`, `metadata`, `full` (and `falloc`, taken as `full`).
    pub fn parse(v: &str) -> Option<Preallocation> {
        match v {
            "off" => Some(Preallocation::Off),
            "metadata" => Some(Preallocation::Metadata),
            "full" | "falloc" => Some(Preallocation::Full),
            _ => None,
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Raw or qcow2.
    pub format: Option<DiskFormat>,
    /// Virtual size in bytes (rounded up to 512); `None` takes the backing
    /// file's size.
    pub size: Option<u64>,
    /// Backing file reference (stored as given; relative to the new
    /// image's directory) and its format. qcow2 only.
    pub backing: Option<(String, DiskFormat)>,
    /// Cluster size in bytes (512 B – 2 MiB, a power of two); 64 KiB when unset.
    pub cluster_size: Option<u64>,
    /// Preallocation.
    pub preallocation: Preallocation,
    /// Set the lazy refcounts compatible bit (qcow2).
    pub lazy_refcounts: bool,
    /// Make a version 2 image (`compat=0.10`; qcow2) instead of version 3.
    pub v2: bool,
}

/// Why an image could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot create {0}")]
    Io(String, #[source] io::Error),
    #[error("an image size is needed (none given and no backing file)")]
    NoSize,
    #[error("size {0} is too large")]
    TooLarge(u64),
    #[error("cluster size must be a power of two between 512 and 2M, not {0}")]
    ClusterSize(u64),
    #[error("raw images have no {0}")]
    RawOption(&'static str),
    #[error("backing file")]
    Backing(#[source] OpenError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("the new image is unreadable")]
    Verify(#[source] header::HeaderError),
    #[error("lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")]
    V2Lazy,
    #[error("cannot make the new image version 2")]
    V2(#[source] crate::backing::BackingError),
}

/// Creates (or truncates and overwrites, as qemu-img does) the image at
/// `path`. Returns the virtual size.
pub fn create(path: &Path, o: &CreateOptions) -> Result<u64, CreateError> {
    let name = path.display().to_string();
    let io_err = |e| CreateError::Io(name.clone(), e);
    let format = o.format.unwrap_or(DiskFormat::Raw);
    let size = match (o.size, &o.backing) {
        (Some(s), _) => s,
        (None, Some((reference, fmt))) => backing_size(path, reference, *fmt)?,
        (None, None) => return Err(CreateError::NoSize),
    };
    let size = size
        .checked_next_multiple_of(SECTOR_SIZE)
        .filter(|s| *s <= 1 << 62)
        .ok_or(CreateError::TooLarge(size))?;
    let cluster = o.cluster_size.unwrap_or(65536);
    if !cluster.is_power_of_two() || !(512..=2 << 20).contains(&cluster) {
        return Err(CreateError::ClusterSize(cluster));
    }
    // Options checked before anything on disk changes.
    if format == DiskFormat::Raw {
        if o.backing.is_some() {
            return Err(CreateError::RawOption("backing file"));
        }
        if o.lazy_refcounts || o.cluster_size.is_some() || o.v2 {
            return Err(CreateError::RawOption(
                "cluster_size, lazy_refcounts or compat",
            ));
        }
    }
    if o.v2 && o.lazy_refcounts {
        return Err(CreateError::V2Lazy);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err)?;
    lock::lock(&file, &name, lock::LockMode::Exclusive)?;
    file.set_len(0).map_err(io_err)?;
    match format {
        DiskFormat::Raw => {
            file.set_len(size).map_err(io_err)?;
            if o.preallocation != Preallocation::Off {
                fallocate(&file, size).map_err(io_err)?;
            }
        }
        DiskFormat::Qcow2 => {
            let storage = ImagoFile::from_open_file(
                file.try_clone().map_err(io_err)?,
                StorageOpenOptions::new().filename(path).write(true),
            )
            .map_err(io_err)?;
            let mut b = ImagoQcow2::<ImagoFile>::create_builder(storage)
                .size(size)
                .cluster_size(cluster as usize)
                .preallocate(match o.preallocation {
                    Preallocation::Off => PreallocateMode::None,
                    Preallocation::Metadata => PreallocateMode::FormatAllocate,
                    Preallocation::Full => PreallocateMode::WriteData,
                });
            if let Some((reference, fmt)) = &o.backing {
                b = b.backing(reference.clone(), fmt.name().to_string());
            }
            b.create().map_err(io_err)?;
            if o.v2 {
                crate::backing::downgrade_to_v2(&file).map_err(CreateError::V2)?;
            }
            if o.lazy_refcounts {
                let mut bits = [0u8; 8];
                file.read_exact_at(&mut bits, 80).map_err(io_err)?;
                let v = u64::from_be_bytes(bits) | header::COMPAT_LAZY_REFCOUNTS;
                file.write_all_at(&v.to_be_bytes(), 80).map_err(io_err)?;
            }
            file.sync_all().map_err(io_err)?;
            Header::read(&file).map_err(CreateError::Verify)?;
        }
    }
    Ok(size)
}

/// The virtual size of the backing file `reference` of a new image at
/// `path`, opened read-only in `format`.
fn backing_size(path: &Path, reference: &str, format: DiskFormat) -> Result<u64, CreateError> {
    let dir = crate::open::parent(path);
    let image = crate::BackingOpener::open_backing(&mut PathOpener, reference, &dir)
        .map_err(|e| CreateError::Backing(OpenError::Open(reference.into(), e)))?;
    let opts = OpenOptions {
        readonly: true,
        format: Some(format),
        ..Default::default()
    };
    let d = crate::open_file(image, &opts, &mut PathOpener).map_err(CreateError::Backing)?;
    Ok(d.size())
}

fn fallocate(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscall on our own fd with integer arguments.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}
