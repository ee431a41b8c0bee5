//! A layer file read while it is being written, as an upload body: the upload runs
//! alongside the compression instead of after it.

use futures_util::stream;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::image::layer::Written;
use crate::registry::BodyStream;

const CHUNK: u64 = 256 * 1024;

struct Follower {
    written: watch::Receiver<Written>,
    file: Option<tokio::fs::File>,
    pos: u64,
    ended: bool,
}

/// The bytes of the file `written` reports on, as they arrive; ends once it is done, and
/// fails if the writer gives up first.
pub fn follow(written: watch::Receiver<Written>) -> BodyStream {
    let start = Follower {
        written,
        file: None,
        pos: 0,
        ended: false,
    };
    Box::pin(stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        let next = f.next().await;
        f.ended = !matches!(next, Some(Ok(_)));
        next.map(|chunk| (chunk, f))
    }))
}

impl Follower {
    async fn next(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        loop {
            let now = self.written.borrow_and_update().clone();
            if self.file.is_none()
                && let Some(file) = &now.file
            {
                // A second descriptor: its offset is this follower's alone.
                match file.try_clone() {
                    Ok(file) => self.file = Some(tokio::fs::File::from_std(file)),
                    Err(e) => return Some(Err(e)),
                }
            }
            if let Some(file) = &mut self.file
                && self.pos < now.bytes
            {
                let mut chunk = vec![0; (now.bytes - self.pos).min(CHUNK) as usize];
                if let Err(e) = file.read_exact(&mut chunk).await {
                    return Some(Err(e));
                }
                self.pos += chunk.len() as u64;
                return Some(Ok(chunk));
            }
            if now.done {
                return None;
            }
            if self.written.changed().await.is_err() {
                return Some(Err(std::io::Error::other("the layer was not finished")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn follows_a_growing_file_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer");
        let (tx, rx) = watch::channel(Written::default());
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::File::create(&path).unwrap();
            let reader = std::fs::File::open(&path).unwrap();
            tx.send_modify(|w| w.file = Some(std::sync::Arc::new(reader)));
            for i in 0..100u32 {
                let block = vec![i as u8; 10_000 + i as usize];
                file.write_all(&block).unwrap();
                tx.send_modify(|w| w.bytes += block.len() as u64);
            }
            tx.send_modify(|w| w.done = true);
        });
        let got: Vec<u8> = follow(rx)
            .map(|c| c.unwrap())
            .collect::<Vec<_>>()
            .await
            .concat();
        writer.join().unwrap();
        let want: Vec<u8> = (0..100u32)
            .flat_map(|i| vec![i as u8; 10_000 + i as usize])
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test]
    async fn fails_when_the_writer_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer");
        std::fs::write(&path, b"partial").unwrap();
        let (tx, rx) = watch::channel(Written {
            file: Some(std::sync::Arc::new(std::fs::File::open(&path).unwrap())),
            bytes: 7,
            done: false,
        });
        drop(tx);
        let chunks: Vec<_> = follow(rx).collect().await;
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert_eq!(chunks[0].as_ref().unwrap(), b"partial");
        assert!(chunks[1].is_err());
    }
}
