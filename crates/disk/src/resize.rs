//! `vt image resize`: a new virtual size for a raw or qcow2 image. Growing
//! is always allowed; shrinking only when asked (`--shrink`), since it
//! drops the guest's data past the new end.

use std::path::Path;

use imago::format::PreallocateMode;

use crate::open::{open_image, Image, ImageFile, OpenError, OpenOptions, PathOpener};
use crate::{DiskBackend, DiskFormat, SECTOR_SIZE};

/// Why an image could not be resized.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("new size {0} is not a positive multiple of 512")]
    Size(u64),
    #[error("shrinking from {0} to {1} bytes loses data; pass --shrink to do it anyway")]
    Shrink(u64, u64),
    #[error("cannot resize {0}")]
    Io(String, #[source] std::io::Error),
}

/// Resizes `path` (in `format`, probed when `None`) to `new_size` bytes;
/// returns the old size.
pub fn resize(
    path: &Path,
    format: Option<DiskFormat>,
    new_size: u64,
    shrink: bool,
) -> Result<u64, ResizeError> {
    if new_size == 0 || !new_size.is_multiple_of(SECTOR_SIZE) {
        return Err(ResizeError::Size(new_size));
    }
    let format = match format {
        Some(f) => Some(f),
        None => Some(crate::info::info(path, None).map_or(DiskFormat::Raw, |i| i.format)),
    };
    let opts = OpenOptions {
        format,
        ..Default::default()
    };
    let name = path.display().to_string();
    let image = open_image(ImageFile::open(path, false)?, &opts, &mut PathOpener)?;
    let old = match &image {
        Image::Raw(r) => r.size(),
        Image::Qcow2(q) => q.size(),
    };
    if new_size < old && !shrink {
        return Err(ResizeError::Shrink(old, new_size));
    }
    let io = |e| ResizeError::Io(name.clone(), e);
    match image {
        Image::Raw(r) => r.file().set_len(new_size).map_err(io)?,
        Image::Qcow2(mut q) => {
            let layer = q.layer();
            layer.resize(new_size, PreallocateMode::None).map_err(io)?;
            layer.flush().map_err(io)?;
            layer.sync().map_err(io)?;
        }
    }
    Ok(old)
}
