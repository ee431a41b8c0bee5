//! The job summary: one table row per image, with what the push had to upload and what the
//! registry already had.

use crate::report::ImageReport;

/// Kept free for the line that says how many rows did not fit.
const TRAILER_ROOM: u64 = 200;

/// The summary in at most `room` bytes: rows that do not fit are counted instead of shown.
pub fn render(reports: &[ImageReport], room: u64) -> String {
    let noun = if reports.len() == 1 {
        "image"
    } else {
        "images"
    };
    let mut md = format!(
        "### kobuild: {} {noun}\n\n\
         | Image | Reference | Platforms | Digest | Size | Time | Blobs |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        reports.len()
    );
    if md.len() as u64 + TRAILER_ROOM > room {
        return String::new();
    }
    for (shown, r) in reports.iter().enumerate() {
        let row = row(r);
        if (md.len() + row.len()) as u64 + TRAILER_ROOM > room {
            md.push_str(&format!(
                "\n{} more not shown: the step's `artifacts` output lists every image.\n",
                reports.len() - shown
            ));
            return md;
        }
        md.push_str(&row);
    }
    md.push('\n');
    md
}

fn row(r: &ImageReport) -> String {
    // The digest has its own column.
    let reference = r
        .reference
        .split_once('@')
        .map_or(r.reference.as_str(), |(n, _)| n);
    let blobs = match &r.push {
        None => "not pushed".to_string(),
        Some(p) => format!(
            "{} uploaded ({}), {} mounted, {} already there",
            p.uploaded,
            size(p.uploaded_bytes),
            p.mounted,
            p.existed
        ),
    };
    format!(
        "| {} | {} | {} | {} | {} | {:.1} s | {} |\n",
        code(&r.image_name),
        code(reference),
        cell(&r.platforms.join(", ")),
        code(r.digest.as_str()),
        size(r.size),
        r.seconds,
        blobs
    )
}

/// Text safe in a table cell: a `|` would start a new cell, a newline end the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn code(s: &str) -> String {
    format!("`{}`", cell(&s.replace('`', "'")))
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::publish::PushStats;

    fn report(name: &str, push: Option<PushStats>) -> ImageReport {
        let digest = Digest::of(name.as_bytes());
        ImageReport {
            image_name: name.into(),
            reference: format!("r.example/apps/x:v1@{digest}"),
            digest,
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            size: 3 * 1024 * 1024 + 200 * 1024,
            seconds: 2.345,
            push,
        }
    }

    #[test]
    fn one_row_per_image() {
        let pushed = PushStats {
            uploaded: 2,
            uploaded_bytes: 1536,
            mounted: 1,
            existed: 4,
        };
        let md = render(
            &[report("ko://a|b", Some(pushed)), report("ko://c", None)],
            u64::MAX,
        );
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), 2, "{md}");
        let digest = Digest::of(b"ko://a|b");
        assert_eq!(
            rows[0],
            format!(
                "| `ko://a\\|b` | `r.example/apps/x:v1` | linux/amd64, linux/arm64 | `{digest}` | 3.2 MiB | 2.3 s | 2 uploaded (1.5 KiB), 1 mounted, 4 already there |"
            )
        );
        assert!(rows[1].ends_with("| not pushed |"), "{}", rows[1]);
        assert!(md.starts_with("### kobuild: 2 images\n"));
    }

    #[test]
    fn fits_the_room_it_has() {
        let reports: Vec<ImageReport> = (0..50)
            .map(|i| report(&format!("ko://{i}"), None))
            .collect();
        let full = render(&reports, u64::MAX);
        let room = full.len() as u64 / 2;
        let md = render(&reports, room);
        assert!(md.len() as u64 <= room, "{} > {room}", md.len());
        assert!(md.contains("more not shown"), "{md}");
        assert_eq!(render(&reports, 10), "");
    }

    #[test]
    fn sizes_are_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
