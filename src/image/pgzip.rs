//! Deterministic parallel gzip, in pigz's format: one gzip member whose deflate stream is cut
//! into fixed-size blocks of input, each compressed on its own (primed with the 32 KiB of input
//! before it, as pigz does) and ended with a sync flush, the last one with BFINAL. The trailer
//! holds the CRC-32 and size of the whole input, so any gzip reader sees one ordinary stream.
//!
//! The output depends only on the input bytes and the level: block boundaries are fixed
//! offsets ([`BLOCK_SIZE`]), each block's bytes are a pure function of its input and the 32 KiB
//! before it, and blocks are written in order. Thread count and timing only decide when a
//! block is compressed, never what it becomes, so `threads = 0` (all inline) and any number of
//! workers give identical bytes.
//!
//! Small streams take the same path: an input of at most one block is one ordinary deflate
//! stream, byte for byte what flate2's `GzEncoder` writes when given the input in one write.
//! Keeping the streaming `GzEncoder` for them would have kept their old digests, but those
//! depend on how the input was cut into writes (zlib-rs' level 1 emits different bytes for
//! the same input written in 8 KiB pieces or in one piece), that is on the tar writer's and
//! `std::io::copy`'s buffer sizes. Here each block goes to zlib-rs in one call, so the bytes
//! depend on nothing but the input and the level; small layers' digests changed once for it.
//!
//! Because a block's bytes are a pure function of its key (level, last or not, dictionary
//! and input), an encoder may be handed an [`Earlier`] stream's blocks: a block whose key
//! is there is copied from that stream (its bytes checked against their recorded hash)
//! instead of compressed. The output is the same byte for byte; only the time differs.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};

use flate2::{Compress, Crc, FlushCompress, Status};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Input bytes per deflate block. Part of the compression recipe (the layer cache's key):
/// changing it changes the digest of every layer larger than one block.
pub const BLOCK_SIZE: usize = 1 << 20;

/// Each block after the first is primed with this much preceding input (deflate's window).
pub const DICT_SIZE: usize = 32 * 1024;

/// Raised whenever the same input and level give other bytes, since it is part of the
/// compression recipe. 2: a new compressor per block (see [`compress_block`]).
pub const VERSION: u32 = 2;

/// Longer than any compressed block (deflate grows incompressible input by 1/8 at most):
/// a recorded block claiming more is damaged, and compressed afresh.
const MAX_BLOCK_OUT: usize = 2 * BLOCK_SIZE;

/// Blocks queued or being compressed per worker: bounds memory to a few MiB per worker.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// More workers than this would outrun the producer (tar + sha256 on one thread).
const MAX_THREADS: usize = 8;

/// Worker threads for one stream: the machine's parallelism, capped.
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

/// The 10-byte header flate2's `GzEncoder` writes: no name, no mtime, XFL from the level
/// (2 = best, 4 = fastest), OS 255 (unknown).
pub fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]
}

/// One compressed block of a finished stream: its key, where its bytes are in the stream,
/// and their hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub key: Digest,
    pub offset: u64,
    pub len: u64,
    pub hash: Digest,
}

/// A finished stream whose blocks may be copied instead of compressed again.
pub struct Earlier {
    file: File,
    blocks: HashMap<Digest, BlockRecord>,
    /// Set when a recorded block was not there intact: the stream's file is damaged.
    damaged: Arc<AtomicBool>,
}

impl Earlier {
    pub fn new(file: File, blocks: Vec<BlockRecord>) -> Earlier {
        let blocks = blocks.into_iter().map(|b| (b.key.clone(), b)).collect();
        Earlier {
            file,
            blocks,
            damaged: Arc::default(),
        }
    }

    /// Becomes true once a block the record names is found damaged (and compressed anew).
    pub fn damaged(&self) -> Arc<AtomicBool> {
        self.damaged.clone()
    }

    /// The block's bytes, if the stream has them intact.
    fn read(&self, key: &Digest) -> Option<Vec<u8>> {
        let b = self.blocks.get(key)?;
        // A damaged record must not ask for more memory than any block can take.
        let bytes = (b.len <= MAX_BLOCK_OUT as u64)
            .then(|| {
                let mut bytes = vec![0; b.len as usize];
                self.file.read_exact_at(&mut bytes, b.offset).ok()?;
                (Digest::of(&bytes) == b.hash).then_some(bytes)
            })
            .flatten();
        if bytes.is_none() {
            self.damaged.store(true, Ordering::Relaxed);
        }
        bytes
    }
}

/// Blocks are keyed (to be recorded, or copied from `earlier`).
#[derive(Clone)]
struct Keyed {
    level: u32,
    earlier: Option<Arc<Earlier>>,
}

/// One block to compress: `buf` is the dictionary (`dict` bytes) followed by the block;
/// `out` is a spare buffer for its bytes.
struct Job {
    buf: Vec<u8>,
    dict: usize,
    last: bool,
    out: Vec<u8>,
    keyed: Option<Keyed>,
    reply: mpsc::SyncSender<io::Result<Done>>,
}

/// A compressed block, with both buffers handed back for reuse.
struct Done {
    buf: Vec<u8>,
    out: Vec<u8>,
    crc: Crc,
    /// The block's key and its bytes' hash, when keyed.
    record: Option<(Digest, Digest)>,
    copied: bool,
}

/// A gzip writer compressing [`BLOCK_SIZE`] blocks on up to `threads` workers. Call
/// [`GzEncoder::finish`]: dropping it unfinished abandons the stream.
pub struct GzEncoder<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    /// Dictionary (`dict` bytes) then the block being filled.
    cur: Vec<u8>,
    dict: usize,
    header_written: bool,
    crc: Crc,
    pool: Option<Pool>,
    /// Replies for dispatched blocks, oldest first: output order.
    pending: VecDeque<mpsc::Receiver<io::Result<Done>>>,
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    keyed: Option<Keyed>,
    /// Bytes written so far, each keyed block's record, and how many were copied.
    offset: u64,
    records: Vec<BlockRecord>,
    copied: usize,
}

impl<W: Write> GzEncoder<W> {
    /// `threads = 0` compresses every block on the calling thread; the bytes are the same.
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        GzEncoder {
            out,
            level,
            threads,
            cur: Vec::new(),
            dict: 0,
            header_written: false,
            crc: Crc::new(),
            pool: None,
            pending: VecDeque::new(),
            spare: Vec::new(),
            keyed: None,
            offset: 0,
            records: Vec::new(),
            copied: 0,
        }
    }

    /// Records every block (see [`GzEncoder::finish`]), and copies those that
    /// `earlier` has. Costs a sha256 of each block's input and output.
    pub fn keyed(mut self, earlier: Option<Earlier>) -> Self {
        self.keyed = Some(Keyed {
            level: self.level,
            earlier: earlier.map(Arc::new),
        });
        self
    }

    /// Compress what is left, write the trailer and hand back the inner writer, with the
    /// record of every block when [`GzEncoder::keyed`] (else none).
    pub fn finish(mut self) -> io::Result<(W, Vec<BlockRecord>)> {
        if self.pool.is_none() {
            // At most one block in all (or no workers): no threads for small streams.
            self.threads = 0;
        }
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        if !self.header_written {
            self.write_header()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        // Join the workers before handing the writer back.
        self.pool.take();
        if self.keyed.as_ref().is_some_and(|k| k.earlier.is_some()) {
            tracing::debug!(
                "gzip: {} of {} blocks copied from the earlier layer",
                self.copied,
                self.records.len()
            );
        }
        Ok((self.out, self.records))
    }

    fn write_header(&mut self) -> io::Result<()> {
        self.header_written = true;
        self.offset = 10;
        self.out.write_all(&header(self.level))
    }

    /// Send the current block off (or compress it here), keeping its tail as the next
    /// block's dictionary.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let (mut next, out) = self.spare.pop().unwrap_or_default();
        next.clear();
        let dict = if last {
            0
        } else {
            let tail = self.cur.len() - DICT_SIZE.min(self.cur.len() - self.dict);
            next.reserve(DICT_SIZE + BLOCK_SIZE);
            next.extend_from_slice(&self.cur[tail..]);
            next.len()
        };
        let buf = std::mem::replace(&mut self.cur, next);
        let job_dict = std::mem::replace(&mut self.dict, dict);
        if self.threads > 0 && self.pool.is_none() {
            match Pool::start(self.threads, self.level) {
                Ok(pool) => self.pool = Some(pool),
                // Fewer threads never change the output: carry on inline.
                Err(_) => self.threads = 0,
            }
        }
        if self.pool.is_none() {
            let done = block(self.level, buf, job_dict, last, out, self.keyed.as_ref())?;
            return self.emit(done);
        }
        while self.pending.len() >= self.threads * IN_FLIGHT_PER_WORKER {
            self.drain_one()?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let pool = self.pool.as_ref().expect("workers are running");
        pool.send(Job {
            buf,
            dict: job_dict,
            last,
            out,
            keyed: self.keyed.clone(),
            reply,
        })?;
        self.pending.push_back(rx);
        // Write whatever is already done, so output hashing keeps pace with compression.
        while let Some(rx) = self.pending.front() {
            match rx.try_recv() {
                Ok(done) => {
                    self.pending.pop_front();
                    self.emit(done?)?;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Err(worker_lost()),
            }
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        let rx = self.pending.pop_front().expect("a pending block");
        let done = rx.recv().map_err(|_| worker_lost())??;
        self.emit(done)
    }

    fn emit(&mut self, done: Done) -> io::Result<()> {
        if !self.header_written {
            self.write_header()?;
        }
        self.out.write_all(&done.out)?;
        self.crc.combine(&done.crc);
        let len = done.out.len() as u64;
        if let Some((key, hash)) = done.record {
            self.records.push(BlockRecord {
                key,
                offset: self.offset,
                len,
                hash,
            });
        }
        self.offset += len;
        self.copied += usize::from(done.copied);
        self.spare.push((done.buf, done.out));
        Ok(())
    }
}

impl<W: Write> Write for GzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let filled = self.cur.len() - self.dict;
            if filled == BLOCK_SIZE {
                // Only now is this block known not to be the last.
                self.dispatch(false)?;
                continue;
            }
            let n = rest.len().min(BLOCK_SIZE - filled);
            self.cur.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    /// Flushes only what is already compressed: a deflate flush here would make the output
    /// depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn worker_lost() -> io::Error {
    io::Error::other("gzip worker thread failed")
}

/// A block's bytes: copied from an earlier stream when keyed and found there, else
/// compressed.
fn block(
    level: u32,
    buf: Vec<u8>,
    dict: usize,
    last: bool,
    out: Vec<u8>,
    keyed: Option<&Keyed>,
) -> io::Result<Done> {
    let Some(keyed) = keyed else {
        return compress_block(level, buf, dict, last, out);
    };
    let key = Digest::of_parts(&[
        &[keyed.level as u8, u8::from(last)],
        &(dict as u64).to_le_bytes(),
        &buf,
    ]);
    let copied = keyed.earlier.as_ref().and_then(|e| e.read(&key));
    let mut done = match copied {
        Some(bytes) => {
            let mut crc = Crc::new();
            crc.update(&buf[dict..]);
            Done {
                buf,
                out: bytes,
                crc,
                record: None,
                copied: true,
            }
        }
        None => compress_block(level, buf, dict, last, out)?,
    };
    done.record = Some((key, Digest::of(&done.out)));
    Ok(done)
}

/// Raw deflate of `buf[dict..]` primed with `buf[..dict]`, ended with a sync flush (or
/// finished, for the last block), into `out`: a pure function of those bytes, `last` and
/// the level.
///
/// A new compressor for every block: zlib-rs' reset keeps the old window, and priming
/// hashes 4 bytes at each of the dictionary's positions, the last one reaching a byte past
/// it, left over from the previous block. A reused compressor's bytes thus depended on
/// which block its worker did before, and so on timing. A new one costs about 10 µs, next
/// to milliseconds for compressing the block.
///
/// The calls are always the same two: all input without flushing, then the flush alone
/// (zlib-rs' bytes depend on how it is called: level 1 opens a block as final when it
/// starts under `Finish`, and cuts differently when input comes in pieces). `out` is made
/// to hold more than deflate's worst case, so neither call stops for want of room (a flush
/// cut short by a full buffer is resumed with other bytes); how much more, which depends
/// on what the buffer held before, changes nothing.
fn compress_block(
    level: u32,
    buf: Vec<u8>,
    dict: usize,
    last: bool,
    mut out: Vec<u8>,
) -> io::Result<Done> {
    let (dictionary, input) = buf.split_at(dict);
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let mut crc = Crc::new();
    crc.update(input);
    // Level 1's static codes take at most 9 bits a byte; the other levels fall back to
    // stored blocks, which add 5 bytes per 16 KiB or more.
    out.clear();
    out.reserve(input.len() + input.len() / 8 + 1024);
    c.compress_vec(input, &mut out, FlushCompress::None)
        .map_err(io::Error::other)?;
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let status = c
        .compress_vec(&[], &mut out, flush)
        .map_err(io::Error::other)?;
    // zlib's rule: a flush is complete when it leaves room over.
    let complete = if last {
        status == Status::StreamEnd
    } else {
        out.len() < out.capacity()
    };
    if c.total_in() != input.len() as u64 || !complete {
        return Err(io::Error::other(format!(
            "gzip: a block of {} bytes outgrew {} bytes of room",
            input.len(),
            out.capacity()
        )));
    }
    Ok(Done {
        buf,
        out,
        crc,
        record: None,
        copied: false,
    })
}

/// Worker threads taking jobs from one queue; each job carries its own reply channel.
struct Pool {
    jobs: Option<mpsc::SyncSender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, level: u32) -> io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Pool {
            jobs: Some(tx),
            handles: Vec::with_capacity(threads),
        };
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            let handle = thread::Builder::new()
                .name("kobuild-gzip".into())
                .spawn(move || worker(&rx, level))?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .expect("pool is running")
            .send(job)
            .map_err(|_| worker_lost())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, level: u32) {
    loop {
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let done = block(
            level,
            job.buf,
            job.dict,
            job.last,
            job.out,
            job.keyed.as_ref(),
        );
        // The encoder may be gone (an error elsewhere): nobody to tell.
        let _ = job.reply.send(done);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Go-binary-like input: runs of compressible text between pseudo-random stretches.
    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                v.extend_from_slice(b"runtime.gopanic main.main reflect.Value ");
            } else {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn pgzip(input: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), level, threads);
        for c in input.chunks(chunk.max(1)) {
            gz.write_all(c).unwrap();
        }
        gz.finish().unwrap().0
    }

    /// Uniformly random bytes: incompressible, the worst case for level 1's static codes.
    pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// Executable-like bytes: sections of machine-code-like bytes, little-endian words with
    /// zero high bytes and symbol names, each padded with zeros to a 4 KiB boundary (as ELF
    /// segments are), so runs of zeros end right before some block boundaries.
    pub(crate) fn executable(len: usize, seed: u64) -> Vec<u8> {
        const NAMES: [&[u8]; 5] = [
            b"runtime.gopanic",
            b"main.main",
            b"reflect.Value.Call",
            b"sync.(*Mutex).Lock",
            b"fmt.Sprintf",
        ];
        let mut x = seed;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut v = Vec::with_capacity(len + (1 << 16));
        while v.len() < len {
            let end = v.len() + 1 + (next() % 60_000) as usize;
            v.push(0xe8);
            while v.len() < end {
                let r = next();
                match r % 4 {
                    0 => v.extend_from_slice(&((r >> 8) % 0x40_0000).to_le_bytes()),
                    1 => {
                        v.extend_from_slice(NAMES[(r >> 8) as usize % NAMES.len()]);
                        v.push(0);
                    }
                    _ => v.extend_from_slice(&next().to_le_bytes()[..1 + (r >> 8) as usize % 8]),
                }
            }
            v.resize(v.len().next_multiple_of(4096), 0);
        }
        v.truncate(len);
        v
    }

    /// Five blocks of the Go toolchain's `go` binary (real machine code, symbol tables and
    /// data), from its second block on, so the blocks are the file's own. `None` (with a
    /// note) where Go is not installed.
    pub(crate) fn go_elf() -> Option<Vec<u8>> {
        let root = std::process::Command::new("go")
            .args(["env", "GOROOT"])
            .output()
            .ok()
            .filter(|o| o.status.success());
        let Some(root) = root else {
            eprintln!("no Go toolchain: the ELF input is skipped");
            return None;
        };
        let go =
            std::path::Path::new(String::from_utf8(root.stdout).unwrap().trim()).join("bin/go");
        let bytes = std::fs::read(&go).unwrap();
        Some(bytes[BLOCK_SIZE..bytes.len().min(6 * BLOCK_SIZE)].to_vec())
    }

    /// The stream the module doc defines, built here without the encoder: each block deflated
    /// by a new zlib-rs compressor, with more output room than it can use, in one call for
    /// the input and one for the flush.
    fn reference(input: &[u8], level: u32) -> Vec<u8> {
        let mut gz = header(level).to_vec();
        let blocks: Vec<&[u8]> = if input.is_empty() {
            vec![&[]]
        } else {
            input.chunks(BLOCK_SIZE).collect()
        };
        for (i, block) in blocks.iter().enumerate() {
            let start = i * BLOCK_SIZE;
            let mut c = Compress::new(flate2::Compression::new(level), false);
            if start > 0 {
                c.set_dictionary(&input[start - DICT_SIZE..start]).unwrap();
            }
            let mut out = vec![0; 2 * block.len() + 4096];
            c.compress(block, &mut out, FlushCompress::None).unwrap();
            assert_eq!(c.total_in(), block.len() as u64);
            let n = c.total_out() as usize;
            let last = i + 1 == blocks.len();
            let flush = if last {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            c.compress(&[], &mut out[n..], flush).unwrap();
            gz.extend_from_slice(&out[..c.total_out() as usize]);
        }
        let mut crc = Crc::new();
        crc.update(input);
        gz.extend_from_slice(&crc.sum().to_le_bytes());
        gz.extend_from_slice(&(input.len() as u32).to_le_bytes());
        gz
    }

    /// Several encoders at once, each with its own workers, on more threads than cores: which
    /// worker gets which block, after which other block, changes from run to run. Every
    /// stream must still be the reference, byte for byte.
    #[test]
    fn streams_are_the_reference_whatever_the_workers_did_before() {
        const B: usize = BLOCK_SIZE;
        let mut inputs = vec![
            ("random", random(B + 777, 7)),
            // A seed whose block 3 came out otherwise from a compressor reused in order.
            ("executable-like", executable(4 * B + 4321, 11)),
        ];
        inputs.extend(go_elf().map(|elf| ("go binary", elf)));
        for (level, rounds) in [(1, 40), (2, 12), (6, 1)] {
            let want: Vec<Vec<u8>> = inputs
                .iter()
                .map(|(_, input)| reference(input, level))
                .collect();
            for (w, (name, input)) in want.iter().zip(&inputs) {
                assert!(
                    gunzip(w) == *input,
                    "{name}: the reference is not the input"
                );
            }
            for round in 0..rounds {
                thread::scope(|s| {
                    for (i, ((name, input), want)) in inputs.iter().zip(&want).enumerate() {
                        s.spawn(move || {
                            // 1 to 8 workers; writes of odd sizes, so blocks are cut mid-write.
                            let threads = 1 + (round + i) % 8;
                            let chunk = [65536, 1000, B + 7, 512 * 1024 + 3][(round + i) % 4];
                            let got = pgzip(input, level, threads, chunk);
                            assert!(
                                got == *want,
                                "{name}, level {level}, {threads} workers, round {round}: \
                                 not the reference"
                            );
                        });
                    }
                });
            }
            // Inline: each block after the one before it, on one thread.
            for ((name, input), want) in inputs.iter().zip(&want) {
                let got = pgzip(input, level, 0, 65536);
                assert!(
                    got == *want,
                    "{name}, level {level}, inline: not the reference"
                );
            }
        }
    }

    /// However big, small or full the buffer a block is written into (workers reuse the
    /// buffers of other blocks), its bytes are the same.
    #[test]
    fn a_block_does_not_depend_on_the_buffer_it_is_written_into() {
        let input = executable(2 * BLOCK_SIZE, 11);
        let job = input[BLOCK_SIZE - DICT_SIZE..].to_vec();
        for last in [false, true] {
            let want = compress_block(2, job.clone(), DICT_SIZE, last, Vec::new())
                .unwrap()
                .out;
            for out in [
                Vec::with_capacity(want.len()),
                Vec::with_capacity(want.len() + 1),
                vec![0xa5; 10],
                vec![0x5a; 3 * BLOCK_SIZE],
            ] {
                let cap = out.capacity();
                let got = compress_block(2, job.clone(), DICT_SIZE, last, out).unwrap();
                assert!(got.out == want, "last: {last}, a buffer of {cap} bytes");
            }
        }
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut single = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut single)
            .unwrap();
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(single, multi);
        single
    }

    #[test]
    fn header_is_what_flate2_writes() {
        for level in 0..=9 {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            assert_eq!(gz.finish().unwrap()[..10], header(level), "level {level}");
        }
        assert_eq!(header(1), *b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff");
    }

    #[test]
    fn one_block_is_what_flate2_writes_given_it_at_once() {
        let input = data(BLOCK_SIZE);
        for len in [0, 1, 5000, BLOCK_SIZE - 1, BLOCK_SIZE] {
            for level in [1, 6, 9] {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                gz.write_all(&input[..len]).unwrap();
                let expected = gz.finish().unwrap();
                for threads in [0, 2] {
                    assert_eq!(
                        pgzip(&input[..len], level, threads, 512),
                        expected,
                        "{len} bytes, level {level}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn output_depends_only_on_input_and_level() {
        const B: usize = BLOCK_SIZE;
        let input = data(3 * B + 12345);
        for len in [
            0,
            1,
            B - 1,
            B,
            B + 1,
            2 * B,
            3 * B,
            3 * B + 1,
            3 * B + 12345,
        ] {
            let input = &input[..len];
            let reference = pgzip(input, 1, 0, len);
            assert_eq!(gunzip(&reference), input, "{len} bytes");
            let blocks = len.div_ceil(B).max(1);
            // Each block but the last ends with an empty stored block (sync flush).
            let syncs = reference
                .windows(4)
                .filter(|w| *w == [0, 0, 0xff, 0xff])
                .count();
            assert!(syncs >= blocks - 1, "{len} bytes: {syncs} sync flushes");
            for (threads, chunk) in [(1, 4096), (2, 8192), (3, 1), (7, 100_000), (2, B + 7)] {
                if chunk == 1 && len > B + 1 {
                    continue; // byte-at-a-time writes are slow in debug builds
                }
                assert_eq!(
                    pgzip(input, 1, threads, chunk),
                    reference,
                    "{len} bytes, {threads} threads, writes of {chunk}"
                );
            }
        }
        let six = pgzip(&input, 6, 2, 65536);
        assert_eq!(gunzip(&six), input);
        assert_eq!(pgzip(&input, 6, 0, 65536), six);
    }

    fn keyed(input: &[u8], earlier: Option<Earlier>) -> (Vec<u8>, Vec<BlockRecord>) {
        let mut gz = GzEncoder::new(Vec::new(), 1, 2).keyed(earlier);
        gz.write_all(input).unwrap();
        gz.finish().unwrap()
    }

    fn earlier(bytes: &[u8], blocks: Vec<BlockRecord>) -> (tempfile::NamedTempFile, Earlier) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        let e = Earlier::new(File::open(file.path()).unwrap(), blocks);
        (file, e)
    }

    #[test]
    fn blocks_of_an_earlier_stream_are_copied_and_change_no_byte() {
        const B: usize = BLOCK_SIZE;
        let a = executable(4 * B + 999, 11);
        let (gz_a, blocks_a) = keyed(&a, None);
        assert!(gz_a == reference(&a, 1), "keying alone changes nothing");
        assert_eq!(blocks_a.len(), 5);
        assert_eq!(blocks_a[0].offset, 10);
        assert_eq!(blocks_a[4].offset + blocks_a[4].len + 8, gz_a.len() as u64);

        // One byte of the second block changes, far from its end (the next block's dictionary).
        let mut b = a.clone();
        b[B + 10] ^= 0xff;
        let (_file, e) = earlier(&gz_a, blocks_a.clone());
        let (gz_b, blocks_b) = keyed(&b, Some(e));
        assert!(gz_b == reference(&b, 1), "copied blocks change the stream");
        let same: Vec<bool> = (0..5).map(|i| blocks_a[i].key == blocks_b[i].key).collect();
        assert_eq!(same, [true, false, true, true, true]);

        // Copying happens: bytes recorded under block 0's key end up in the output as they are.
        let marker = b"copied, not compressed".to_vec();
        let record = BlockRecord {
            key: blocks_a[0].key.clone(),
            offset: 0,
            len: marker.len() as u64,
            hash: Digest::of(&marker),
        };
        let (_file, e) = earlier(&marker, vec![record.clone()]);
        let damaged = e.damaged();
        let (gz_c, _) = keyed(&a, Some(e));
        assert!(gz_c.windows(marker.len()).any(|w| w == marker));
        assert!(!damaged.load(Ordering::Relaxed));
        // Bytes that do not match their recorded hash are compressed afresh instead, and
        // the stream is reported damaged.
        let wrong = BlockRecord {
            hash: Digest::of(b"other"),
            ..record.clone()
        };
        let (_file, e) = earlier(&marker, vec![wrong]);
        let damaged = e.damaged();
        assert_eq!(keyed(&a, Some(e)).0, gz_a);
        assert!(damaged.load(Ordering::Relaxed));
        // Nor a damaged record claiming more bytes than any block has.
        let huge = BlockRecord {
            len: u64::MAX,
            ..record
        };
        let (_file, e) = earlier(&marker, vec![huge]);
        let damaged = e.damaged();
        assert_eq!(keyed(&a, Some(e)).0, gz_a);
        assert!(damaged.load(Ordering::Relaxed));
    }

    #[test]
    fn system_gzip_reads_the_stream() {
        let Ok(_) = std::process::Command::new("gzip").arg("--version").output() else {
            eprintln!("no gzip on PATH: skipped");
            return;
        };
        let input = data(2 * BLOCK_SIZE + 777);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, pgzip(&input, 1, 2, 65536)).unwrap();
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .output()
            .unwrap();
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        let z = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(z.status.success(), "{}", String::from_utf8_lossy(&z.stderr));
        assert!(z.stdout == input, "gzip -dc gives other bytes");
    }

    #[test]
    fn dropping_unfinished_stops_the_workers() {
        let mut gz = GzEncoder::new(Vec::new(), 1, 3);
        gz.write_all(&data(5 * BLOCK_SIZE)).unwrap();
        drop(gz);
    }
}
