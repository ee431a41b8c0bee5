//! Tar headers written byte for byte as Go's `archive/tar` writes ko's entries: USTAR unless
//! a name needs PAX, mode 0555, uid/gid 0, empty user and group names, no trailing slash on
//! directories, and two zero blocks at the end with no padding to a record size.
//!
//! The `tar` crate is not used here: it refuses the absolute member names ko writes
//! (`/ko-app/NAME`) and falls back to GNU long-name entries where Go uses PAX.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;

pub enum Kind {
    Dir,
    File { size: u64 },
}

pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    pub fn dir(&mut self, name: &str, mtime: u64) -> io::Result<()> {
        self.header(name, Kind::Dir, mtime, &[])
    }

    /// A regular file whose `size` bytes are read from `data`; fails if `data` has fewer.
    pub fn file(
        &mut self,
        name: &str,
        size: u64,
        mtime: u64,
        pax: &[(&str, &[u8])],
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.header(name, Kind::File { size }, mtime, pax)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: file shrank while being read ({copied} of {size} bytes)"),
            ));
        }
        self.pad(size)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        kind: Kind,
        mtime: u64,
        pax: &[(&str, &[u8])],
    ) -> io::Result<()> {
        let (typeflag, size) = match kind {
            Kind::Dir => (b'5', 0),
            Kind::File { size } => (b'0', size),
        };
        let fits_v7 = name.is_ascii() && name.len() <= NAME_LEN;
        let split = if fits_v7 {
            None
        } else {
            split_ustar_path(name)
        };
        let mut records: Vec<(&str, &[u8])> = pax.to_vec();
        if !fits_v7 && split.is_none() {
            records.push(("path", name.as_bytes()));
        }
        let mut block = [0u8; BLOCK];
        if records.is_empty() {
            let (prefix, short) = split.unwrap_or(("", name));
            fill_common(&mut block, short, typeflag, size, mtime);
            put_str(&mut block[345..500], prefix);
        } else {
            records.sort_by(|a, b| a.0.cmp(b.0));
            let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            self.raw_pax_header(name, &data)?;
            self.out.write_all(&data)?;
            self.pad(data.len() as u64)?;
            fill_common(&mut block, &to_ascii(name), typeflag, size, mtime);
        }
        set_ustar_and_checksum(&mut block);
        self.out.write_all(&block)
    }

    // Go's `writeRawFile`: an `x` entry named DIR/PaxHeaders.0/FILE, only the v7 fields set.
    fn raw_pax_header(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let (dir, file) = match name.rfind('/') {
            Some(i) => (&name[..=i], &name[i + 1..]),
            None => ("", name),
        };
        let mut pax_name = to_ascii(&path_join(dir, &format!("PaxHeaders.0/{file}")));
        pax_name.truncate(NAME_LEN);
        let pax_name = pax_name.trim_end_matches('/');
        let mut block = [0u8; BLOCK];
        block[156] = b'x';
        put_str(&mut block[0..100], pax_name);
        put_octal(&mut block[100..108], 0);
        put_octal(&mut block[108..116], 0);
        put_octal(&mut block[116..124], 0);
        put_octal(&mut block[124..136], data.len() as u64);
        put_octal(&mut block[136..148], 0);
        set_ustar_and_checksum(&mut block);
        self.out.write_all(&block)
    }
}

fn fill_common(block: &mut [u8; BLOCK], name: &str, typeflag: u8, size: u64, mtime: u64) {
    put_str(&mut block[0..100], name);
    put_octal(&mut block[100..108], 0o555);
    put_octal(&mut block[108..116], 0);
    put_octal(&mut block[116..124], 0);
    put_octal(&mut block[124..136], size);
    put_octal(&mut block[136..148], mtime);
    block[156] = typeflag;
    put_octal(&mut block[329..337], 0);
    put_octal(&mut block[337..345], 0);
}

fn set_ustar_and_checksum(block: &mut [u8; BLOCK]) {
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut block[148..155], sum);
    block[155] = b' ';
}

// Go's formatString: copy, NUL-terminate when there is room.
fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

// Go's formatOctal: zero-padded octal digits, then a NUL.
fn put_octal(field: &mut [u8], v: u64) {
    let digits = format!("{v:o}");
    let width = field.len() - 1;
    let s = format!("{digits:0>width$}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

fn to_ascii(s: &str) -> String {
    s.chars().filter(char::is_ascii).collect()
}

fn path_join(dir: &str, rest: &str) -> String {
    if dir.is_empty() {
        rest.to_string()
    } else {
        format!("{}/{rest}", dir.trim_end_matches('/'))
    }
}

// Go's splitUSTARPath: a long ASCII name split at a '/' into a prefix (<=155) and name (<=100).
fn split_ustar_path(name: &str) -> Option<(&str, &str)> {
    if name.len() <= NAME_LEN || !name.is_ascii() {
        return None;
    }
    let mut len = name.len();
    if len > PREFIX_LEN + 1 {
        len = PREFIX_LEN + 1;
    } else if name.ends_with('/') {
        len -= 1;
    }
    let i = name[..len].rfind('/')?;
    let suffix_len = name.len() - i - 1;
    if i == 0 || suffix_len > NAME_LEN || suffix_len == 0 || i > PREFIX_LEN {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

// "%d %s=%s\n", where the length counts its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut size = base + base.to_string().len();
    if size.to_string().len() + base != size {
        size = base + size.to_string().len();
    }
    let mut rec = format!("{size} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_match_go() {
        let mut f = [0xffu8; 8];
        put_octal(&mut f, 0o555);
        assert_eq!(&f, b"0000555\0");
        let mut f = [0xffu8; 12];
        put_octal(&mut f, 5);
        assert_eq!(&f, b"00000000005\0");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        // 91 bytes of value: 98 + 2 digits would claim 100, but "100" has 3 digits.
        let rec = pax_record("path", &[b'x'; 91]);
        assert_eq!(rec.len(), 101);
        assert!(rec.starts_with(b"101 path="));
    }

    #[test]
    fn long_ascii_names_split_like_go() {
        let name = format!("/var/run/ko/{}/file.txt", "d".repeat(100));
        let (p, n) = split_ustar_path(&name).unwrap();
        assert_eq!(n, "file.txt");
        assert_eq!(p.len(), 112);
        assert!(split_ustar_path(&format!("/{}", "x".repeat(120))).is_none());
    }

    #[test]
    fn unsplittable_names_use_pax_and_still_read_back() {
        let long = format!("/var/run/ko/{}", "é".repeat(60));
        let mut w = TarWriter::new(Vec::new());
        w.file(&long, 3, 0, &[], &mut &b"abc"[..]).unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), long.as_bytes());
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
