//! What `vt image info` shows about an image, with qemu-img's meanings:
//! the format, virtual and allocated sizes, and for qcow2 the cluster
//! size, version, flags and backing file (as stored, as resolved, and its
//! format). Reads the header only; opens no backing file.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::header::{Header, HeaderError};
use crate::probe::{self, Probed};
use crate::raw;
use crate::DiskFormat;

/// One image's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The name as given.
    pub filename: String,
    /// Its format.
    pub format: DiskFormat,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Bytes allocated on the host (`st_blocks * 512`).
    pub actual_size: u64,
    /// The dirty bit (qcow2), false for raw.
    pub dirty: bool,
    /// qcow2 only.
    pub qcow2: Option<Qcow2Info>,
    /// Internal snapshots (qcow2).
    pub snapshots: Vec<crate::snapshot::Snapshot>,
}

/// The qcow2 part of [`ImageInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Info {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// `"0.10"` (v2) or `"1.1"` (v3).
    pub compat: &'static str,
    /// The lazy refcounts bit.
    pub lazy_refcounts: bool,
    /// Refcount width in bits.
    pub refcount_bits: u32,
    /// The corrupt bit.
    pub corrupt: bool,
    /// Extended L2 entries.
    pub extended_l2: bool,
    /// `"zlib"` or `"zstd"`.
    pub compression_type: &'static str,
    /// Internal snapshots.
    pub snapshots: u32,
    /// The backing reference as stored.
    pub backing_filename: Option<String>,
    /// The backing reference resolved against the image's name, as
    /// QEMU's `path_combine` does.
    pub full_backing_filename: Option<String>,
    /// The backing format from the header extension.
    pub backing_format: Option<String>,
}

/// Why an image could not be described.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("cannot read {0}")]
    Io(String, #[source] io::Error),
    #[error("{0} is a {1} image, which is not supported")]
    Unsupported(String, &'static str),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error("{0}")]
    Raw(String, #[source] raw::RawError),
    #[error("{0}: backing file '{1}' has no format in the image header; refusing to probe it")]
    NoBackingFormat(String, String),
    #[error("{0}: backing format '{1}' is not supported (raw and qcow2 are)")]
    BackingFormat(String, String),
    #[error("{0}: backing file {1} is not a regular file")]
    NotFile(String, String),
    #[error("{0}: backing chain loops back to {1}")]
    Loop(String, String),
    #[error("{0}: backing chain deeper than {max}", max = crate::MAX_CHAIN_DEPTH)]
    Depth(String),
}

/// QEMU's `path_combine`: `reference` relative to the directory part of
/// `base` (as written, not canonicalised).
pub fn path_combine(base: &str, reference: &str) -> String {
    if reference.starts_with('/') {
        return reference.to_string();
    }
    match base.rfind('/') {
        Some(i) => format!("{}{}", &base[..=i], reference),
        None => reference.to_string(),
    }
}

/// Describes `path`; `format` forces one, else the first sector decides.
pub fn info(path: &Path, format: Option<DiskFormat>) -> Result<ImageInfo, InfoError> {
    let name = path.display().to_string();
    let io_err = |e| InfoError::Io(name.clone(), e);
    let file = std::fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let format = match format {
        Some(f) => f,
        None => match probe::probe(&file).map_err(io_err)? {
            Probed::Raw => DiskFormat::Raw,
            Probed::Qcow2 => DiskFormat::Qcow2,
            Probed::Other(f) => return Err(InfoError::Unsupported(name, f)),
        },
    };
    let mut out = ImageInfo {
        filename: name.clone(),
        format,
        virtual_size: 0,
        actual_size: meta.blocks() * 512,
        dirty: false,
        qcow2: None,
        snapshots: Vec::new(),
    };
    match format {
        DiskFormat::Raw => {
            out.virtual_size = raw::file_size(&file).map_err(|e| InfoError::Raw(name, e))?;
        }
        DiskFormat::Qcow2 => {
            let h = Header::read(&file).map_err(|e| InfoError::Header(name.clone(), e))?;
            out.virtual_size = h.size;
            out.dirty = h.dirty();
            out.snapshots = crate::snapshot::read_table(&file, &h).unwrap_or_default();
            out.qcow2 = Some(Qcow2Info {
                cluster_size: h.cluster_size(),
                compat: h.compat(),
                lazy_refcounts: h.lazy_refcounts(),
                refcount_bits: h.refcount_bits(),
                corrupt: h.corrupt(),
                extended_l2: h.incompatible & crate::header::INCOMPAT_EXTL2 != 0,
                compression_type: if h.incompatible & crate::header::INCOMPAT_COMPRESSION != 0 {
                    "zstd"
                } else {
                    "zlib"
                },
                snapshots: h.nb_snapshots,
                full_backing_filename: h.backing_file.as_deref().map(|b| path_combine(&name, b)),
                backing_filename: h.backing_file,
                backing_format: h.backing_format,
            });
        }
    }
    Ok(out)
}

/// `qemu-img info --backing-chain`: the image, then each backing file
/// down the chain (named as qemu-img names them, opened in the format the
/// layer above names; a backing file without a format, a non-regular
/// file, a loop or a chain deeper than [`crate::MAX_CHAIN_DEPTH`] is an
/// error, never probed or followed).
pub fn chain(path: &Path, format: Option<DiskFormat>) -> Result<Vec<ImageInfo>, InfoError> {
    let mut out: Vec<ImageInfo> = Vec::new();
    let mut seen = Vec::new();
    let (mut next, mut fmt) = (path.to_path_buf(), format);
    loop {
        let name = next.display().to_string();
        if let Ok(c) = std::fs::canonicalize(&next) {
            if seen.contains(&c) {
                return Err(InfoError::Loop(path.display().to_string(), name));
            }
            seen.push(c);
        }
        if out.len() > crate::MAX_CHAIN_DEPTH {
            return Err(InfoError::Depth(path.display().to_string()));
        }
        if !out.is_empty() && !std::fs::metadata(&next).is_ok_and(|m| m.is_file()) {
            return Err(InfoError::NotFile(path.display().to_string(), name));
        }
        let i = info(&next, fmt)?;
        let below = i.qcow2.as_ref().and_then(|q| {
            q.full_backing_filename
                .clone()
                .map(|b| (b, q.backing_format.clone()))
        });
        out.push(i);
        let Some((b, f)) = below else {
            return Ok(out);
        };
        fmt = Some(match f.as_deref() {
            Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            Some(other) => return Err(InfoError::BackingFormat(name, other.to_string())),
            None => return Err(InfoError::NoBackingFormat(name, b)),
        });
        next = b.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_combine_is_qemus() {
        assert_eq!(path_combine("x.qcow2", "b.raw"), "b.raw");
        assert_eq!(path_combine("/tmp/x.qcow2", "b.raw"), "/tmp/b.raw");
        assert_eq!(path_combine("d/x.qcow2", "../b.raw"), "d/../b.raw");
        assert_eq!(path_combine("d/x.qcow2", "/abs"), "/abs");
    }
}
