//! One virtio-blk request (spec 5.2.6): a 16-byte header the device reads,
//! data, and a status byte the device writes last.
//!
//! ```text
//! readable: type u32 | reserved u32 | sector u64 | [data for OUT, DISCARD, WRITE_ZEROES]
//! writable: [data for IN, GET_ID] | status u8
//! ```
//!
//! A chain without room for the header or the status byte is a layout
//! error (the device fails); a request with a bad sector range or an
//! unknown type gets IOERR/UNSUPP back and the device carries on.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::backend::{DiskBackend, SECTOR_SIZE};
use crate::stats::DiskOp;
use crate::virtio::chain::{Chain, ChainError, Desc};

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Bytes of a discard / write-zeroes segment.
const SEGMENT_SIZE: u64 = 16;
/// Segments accepted per discard / write-zeroes request (config says 1).
pub const MAX_SEGMENTS: u64 = 1;
/// The unmap flag of a write-zeroes segment.
const UNMAP: u32 = 1;
/// Bytes of the GET_ID reply.
pub const ID_LEN: usize = 20;

/// A piece of guest memory.
type Piece = (GuestAddress, u64);

/// How an executed request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for the used ring (written into the guest's buffers + status).
    pub used: u32,
    /// The status was OK.
    pub ok: bool,
    /// Bytes of the disk it read, wrote or discarded.
    pub bytes: u64,
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub kind: u32,
    pub sector: u64,
    /// The data buffers, readable or writable depending on `kind`.
    pub data: Vec<Piece>,
    pub data_len: u64,
    pub status: GuestAddress,
}

/// Splits `descs` into the first `n` bytes and the rest.
fn split(descs: &[Desc], n: u64) -> Option<(Vec<Piece>, Vec<Piece>)> {
    let (mut front, mut back) = (Vec::new(), Vec::new());
    let mut need = n;
    for d in descs {
        let len = u64::from(d.len);
        if need >= len {
            front.push((d.addr, len));
            need -= len;
        } else if need > 0 {
            front.push((d.addr, need));
            back.push((d.addr.checked_add(need)?, len - need));
            need = 0;
        } else if len > 0 {
            back.push((d.addr, len));
        }
    }
    (need == 0).then_some((front, back))
}

fn read_pieces(mem: &GuestMemoryMmap, pieces: &[Piece], out: &mut [u8]) -> Option<()> {
    let mut at = 0usize;
    for &(addr, len) in pieces {
        let dst = out.get_mut(at..at + len as usize)?;
        mem.read_slice(dst, addr).ok()?;
        at += len as usize;
    }
    Some(())
}

fn total(pieces: &[Piece]) -> u64 {
    pieces.iter().map(|p| p.1).sum()
}

impl Request {
    /// Finds the header, data and status byte of `chain`.
    pub fn parse(mem: &GuestMemoryMmap, chain: &Chain) -> Result<Request, ChainError> {
        let layout = |why| ChainError::Layout(chain.head, why);
        // Readable buffers first, then writable ones: two slices, no copies.
        let first_writable = chain
            .descs
            .iter()
            .position(|d| d.writable)
            .unwrap_or(chain.descs.len());
        let (readable, writable) = chain.descs.split_at(first_writable);
        if writable.iter().any(|d| !d.writable) {
            return Err(layout("a readable buffer follows a writable one"));
        }
        let (head, rdata) = split(readable, 16).ok_or(layout("no room for the header"))?;
        let mut hdr = [0u8; 16];
        read_pieces(mem, &head, &mut hdr).ok_or(layout("header unreadable"))?;
        let wlen: u64 = writable.iter().map(|d| u64::from(d.len)).sum();
        let (wdata, status) = split(
            writable,
            wlen.checked_sub(1).ok_or(layout("no status byte"))?,
        )
        .ok_or(layout("no status byte"))?;
        let status = status.first().ok_or(layout("no status byte"))?.0;
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&hdr[8..16]);
        let data = match kind {
            T_IN | T_GET_ID => wdata,
            _ => rdata,
        };
        Ok(Request {
            kind,
            sector: u64::from_le_bytes(s),
            data_len: total(&data),
            data,
            status,
        })
    }

    /// Bytes this request moves, for rate limiting: nothing for one that
    /// will fail its range check (a driver cannot stall the device by
    /// asking for a huge transfer that is refused anyway).
    pub fn cost(&self, disk_size: u64) -> u64 {
        match self.kind {
            T_IN | T_OUT if self.range(self.sector, self.data_len, disk_size).is_ok() => {
                self.data_len
            }
            _ => 0,
        }
    }

    /// Runs the request against `disk`, writes the status byte and returns
    /// how many bytes went into the guest's writable buffers.
    pub fn execute(
        &self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskBackend,
        readonly: bool,
        serial: &[u8],
    ) -> Result<u32, ChainError> {
        self.execute_counted(mem, disk, readonly, serial)
            .map(|o| o.used)
    }

    /// [`Request::execute`], telling also how it went (for the counters).
    pub fn execute_counted(
        &self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskBackend,
        readonly: bool,
        serial: &[u8],
    ) -> Result<Outcome, ChainError> {
        let (status, written, covered) = match self.run(mem, disk, readonly, serial) {
            Ok((written, covered)) => (S_OK, written, covered),
            Err(s) => (s, 0, 0),
        };
        mem.write_obj(status, self.status)
            .map_err(|_| ChainError::OutOfMemory {
                addr: self.status.0,
                len: 1,
            })?;
        Ok(Outcome {
            used: u32::try_from(written).unwrap_or(u32::MAX).saturating_add(1),
            ok: status == S_OK,
            bytes: covered,
        })
    }

    /// What the request is, for the counters.
    pub fn op(&self) -> DiskOp {
        match self.kind {
            T_IN => DiskOp::Read,
            T_OUT => DiskOp::Write,
            T_FLUSH => DiskOp::Flush,
            T_DISCARD | T_WRITE_ZEROES => DiskOp::Discard,
            _ => DiskOp::Other,
        }
    }

    /// The byte range `sector.. + len`, if it lies on the disk.
    fn range(&self, sector: u64, len: u64, disk_size: u64) -> Result<u64, u8> {
        let start = sector.checked_mul(SECTOR_SIZE).ok_or(S_IOERR)?;
        let end = start.checked_add(len).ok_or(S_IOERR)?;
        if !len.is_multiple_of(SECTOR_SIZE) || end > disk_size {
            return Err(S_IOERR);
        }
        Ok(start)
    }

    fn slices<'m>(&self, mem: &'m GuestMemoryMmap) -> Result<Vec<VolatileSlice<'m>>, u8> {
        let mut out = Vec::with_capacity(self.data.len());
        for &(addr, len) in &self.data {
            for s in mem.get_slices(addr, len as usize) {
                out.push(s.map_err(|_| S_IOERR)?);
            }
        }
        Ok(out)
    }

    fn run(
        &self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskBackend,
        readonly: bool,
        serial: &[u8],
    ) -> Result<(u64, u64), u8> {
        let io = |_| S_IOERR;
        match self.kind {
            T_IN => {
                let at = self.range(self.sector, self.data_len, disk.size())?;
                disk.read_at(at, &self.slices(mem)?).map_err(io)?;
                Ok((self.data_len, self.data_len))
            }
            T_OUT if readonly => Err(S_IOERR),
            T_OUT => {
                let at = self.range(self.sector, self.data_len, disk.size())?;
                disk.write_at(at, &self.slices(mem)?).map_err(io)?;
                Ok((0, self.data_len))
            }
            T_FLUSH => disk.flush().map(|_| (0, 0)).map_err(io),
            T_GET_ID => {
                let mut id = [0u8; ID_LEN];
                let n = serial.len().min(ID_LEN);
                id[..n].copy_from_slice(&serial[..n]);
                let mut done = 0u64;
                for &(addr, len) in &self.data {
                    let Some(part) =
                        id.get(done as usize..(done + len).min(ID_LEN as u64) as usize)
                    else {
                        break;
                    };
                    mem.write_slice(part, addr).map_err(|_| S_IOERR)?;
                    done += part.len() as u64;
                }
                Ok((done, 0))
            }
            T_DISCARD | T_WRITE_ZEROES if readonly => Err(S_IOERR),
            T_DISCARD | T_WRITE_ZEROES => {
                if self.data_len == 0
                    || !self.data_len.is_multiple_of(SEGMENT_SIZE)
                    || self.data_len / SEGMENT_SIZE > MAX_SEGMENTS
                {
                    return Err(S_UNSUPP);
                }
                let mut seg = [0u8; SEGMENT_SIZE as usize];
                read_pieces(mem, &self.data, &mut seg).ok_or(S_IOERR)?;
                let sector = u64::from_le_bytes(seg[0..8].try_into().map_err(|_| S_IOERR)?);
                let count = u32::from_le_bytes(seg[8..12].try_into().map_err(|_| S_IOERR)?);
                let flags = u32::from_le_bytes(seg[12..16].try_into().map_err(|_| S_IOERR)?);
                // Only write-zeroes has a flag (unmap); anything else is unsupported.
                let allowed = if self.kind == T_WRITE_ZEROES {
                    UNMAP
                } else {
                    0
                };
                if flags & !allowed != 0 {
                    return Err(S_UNSUPP);
                }
                let len = u64::from(count) * SECTOR_SIZE;
                let at = self.range(sector, len, disk.size())?;
                if self.kind == T_DISCARD {
                    // A hint: a backend that cannot drop the range keeps it.
                    let _ = disk.discard(at, len);
                } else {
                    disk.write_zeroes(at, len).map_err(io)?;
                }
                Ok((0, len))
            }
            _ => Err(S_UNSUPP),
        }
    }
}
