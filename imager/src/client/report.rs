//! The ota-server's answers as text for people: aligned tables and short lines. (`--json`
//! prints the API types themselves.)

use firmware::image::ImageId;
use ota_proto::client::Uploaded;
use ota_proto::{
    AuditEntry, DeviceCreated, DeviceDetail, DeviceInfo, EnvironmentInfo, ImageInfo, ReleaseInfo,
    RolloutState, Timestamp,
};

/// Image ids in tables: the first 12 hex digits.
pub fn short_id(id: &ImageId) -> String {
    let mut hex = id.to_string();
    hex.truncate(12);
    hex
}

/// A time to the second, for tables: `2026-05-01 12:00:00Z` (the API's RFC 3339 form,
/// `2026-05-01T12:00:00.123Z`, without the `T` and the milliseconds).
pub fn short_time(time: Timestamp) -> String {
    let text = time.to_string();
    match text.split_once('T') {
        Some((date, clock)) => {
            let clock = clock.split(['.', 'Z']).next().unwrap_or(clock);
            format!("{date} {clock}Z")
        }
        None => text,
    }
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `imager push` prints: the id, then board, version and size, and whether the upload
/// stored it or it was there already.
pub fn pushed(p: &Uploaded) -> String {
    let s = &p.image.summary;
    let stored = if p.new {
        "new, stored".to_owned()
    } else {
        format!(
            "already stored (uploaded {} by {})",
            short_time(p.image.uploaded_at),
            p.image.uploaded_by
        )
    };
    format!(
        "image {}: {stored}\n  board {}, version {}, {} bytes\n",
        s.id, s.board, s.version, s.file_size
    )
}

/// `none` when there are no `items`, else a table with a row per item.
fn listing<T>(items: &[T], none: &str, header: &[&str], row: impl Fn(&T) -> Vec<String>) -> String {
    if items.is_empty() {
        return format!("{none}\n");
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(header, &rows)
}

/// What `imager images` prints.
pub fn images(images: &[ImageInfo]) -> String {
    listing(
        images,
        "no images stored",
        &["IMAGE", "BOARD", "VERSION", "BYTES", "UPLOADED", "BY"],
        |i| {
            vec![
                short_id(&i.summary.id),
                i.summary.board.clone(),
                i.summary.version.clone(),
                i.summary.file_size.to_string(),
                short_time(i.uploaded_at),
                i.uploaded_by.clone(),
            ]
        },
    )
}

/// The current stage of a rollout: `2/3 (25%)`.
pub fn stage(r: &ReleaseInfo) -> String {
    match r.stages.get(r.stage) {
        Some(percent) => format!("{}/{} ({percent}%)", r.stage + 1, r.stages.len()),
        None => "-".to_owned(),
    }
}

/// A rollout state; halted in capitals behind `!!` so it cannot be missed.
pub fn state(state: RolloutState) -> String {
    match state {
        RolloutState::Halted => "!! HALTED".to_owned(),
        other => other.to_string(),
    }
}

/// One release on one line, as `release`, `promote`, `rollback`, `pause` and `resume` print it.
pub fn release(r: &ReleaseInfo) -> String {
    let mut line = format!(
        "{} {} {}: image {} ({} {}), {}, stage {}\n",
        r.environment,
        r.kind,
        r.sequence,
        r.image_id,
        r.board,
        r.version,
        state(r.state),
        stage(r)
    );
    if let Some(reason) = &r.reason {
        line.push_str(&format!("  {}: {reason}\n", r.state));
    }
    line
}

/// What `imager status` prints: one row per environment and board, then why any rollout
/// halted or paused.
pub fn status(envs: &[EnvironmentInfo]) -> String {
    if envs.is_empty() {
        return "no environments\n".to_owned();
    }
    let mut rows = Vec::new();
    let mut notes = String::new();
    for env in envs {
        if env.current.is_empty() {
            let mut row = vec![env.name.to_string(), "-".to_owned(), "(no release)".to_owned()];
            row.resize(10, "-".to_owned());
            rows.push(row);
        }
        for r in &env.current {
            let p = &r.progress;
            rows.push(vec![
                env.name.to_string(),
                r.board.to_string(),
                short_id(&r.image_id),
                r.version.clone(),
                r.sequence.to_string(),
                state(r.state),
                stage(r),
                p.confirmed.to_string(),
                p.failed.to_string(),
                p.in_stage.to_string(),
            ]);
            let flag = if r.state == RolloutState::Halted { "!! " } else { "" };
            if let Some(reason) = &r.reason {
                notes.push_str(&format!(
                    "{flag}{} {} release {} {}: {reason}\n",
                    env.name, r.board, r.sequence, r.state
                ));
            } else if r.state == RolloutState::Halted {
                notes.push_str(&format!(
                    "{flag}{} {} release {} halted\n",
                    env.name, r.board, r.sequence
                ));
            }
        }
    }
    let header = [
        "ENV",
        "BOARD",
        "IMAGE",
        "VERSION",
        "SEQ",
        "STATE",
        "STAGE",
        "CONFIRMED",
        "FAILED",
        "IN-STAGE",
    ];
    let mut out = table(&header, &rows);
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

/// What `imager devices` prints.
pub fn devices(devices: &[DeviceInfo]) -> String {
    let header = ["DEVICE", "BOARD", "ENV", "STATE", "RUNNING", "CONFIRMED", "LAST SEEN"];
    listing(devices, "no devices", &header, device_row)
}

fn device_row(d: &DeviceInfo) -> Vec<String> {
    let (running, confirmed) = match &d.running {
        Some(id) => (short_id(id), if d.confirmed { "yes" } else { "trial" }),
        None => ("-".to_owned(), "-"),
    };
    vec![
        d.id.to_string(),
        d.board.to_string(),
        d.environment.to_string(),
        d.state.to_string(),
        running,
        confirmed.to_owned(),
        d.last_seen.map_or_else(|| "never".to_owned(), short_time),
    ]
}

/// What `imager device add` prints: the device and its token, shown only this once.
pub fn device_created(created: &DeviceCreated) -> String {
    let d = &created.device;
    format!(
        "enrolled device {} (board {}, environment {})\ntoken: {}\n(the server shows this token \
         only once: store it on the device now)\n",
        d.id, d.board, d.environment, created.token
    )
}

/// What `imager device add --from-csv` prints: one line, never the tokens.
pub fn enrolled(csv: &std::path::Path, enrolled: &super::enroll::Enrolled) -> String {
    format!(
        "enrolled {} device{} from {}; their tokens are in {} (readable by you only; the server \
         shows them only this once)\n",
        enrolled.devices,
        if enrolled.devices == 1 { "" } else { "s" },
        csv.display(),
        enrolled.tokens_file.display()
    )
}

/// What `imager device show` prints: the device, then its events, newest first.
pub fn device_detail(detail: &DeviceDetail) -> String {
    let d = &detail.device;
    let mut out = devices(std::slice::from_ref(d));
    fn optional(value: Option<impl ToString>) -> String {
        value.map_or_else(|| "-".to_owned(), |v| v.to_string())
    }
    let slot_b = d.slot_b.as_ref().map(|s| match &s.image_id {
        Some(id) => format!("{} {id}", s.state),
        None => s.state.to_string(),
    });
    let facts = [
        ("running", optional(d.running)),
        ("failed image", optional(d.failed_image)),
        ("slot B", optional(slot_b)),
        ("last outcome", optional(d.last_outcome.as_ref())),
        ("release sequence", optional(d.release_sequence)),
        ("rollout bucket", d.bucket.to_string()),
        ("enrolled", short_time(d.enrolled_at)),
    ];
    out.push('\n');
    for (label, value) in facts {
        out.push_str(&format!("{label:<17} {value}\n"));
    }
    out.push('\n');
    out.push_str(&listing(
        &detail.events,
        "no events",
        &["WHEN", "IMAGE", "EVENT", "DETAIL"],
        |e| {
            vec![
                short_time(e.at),
                short_id(&e.image_id),
                e.kind.as_str().to_owned(),
                e.detail.clone().unwrap_or_default(),
            ]
        },
    ));
    out
}

/// What `imager audit` prints.
pub fn audit(entries: &[AuditEntry]) -> String {
    listing(entries, "no audit entries", &["WHEN", "ACTOR", "ROLE", "ACTION", "TARGET"], |e| {
        vec![
            short_time(e.at),
            e.actor.clone(),
            e.role.to_string(),
            e.action.to_string(),
            e.target.clone(),
        ]
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ota_proto::{
        DeviceState, HexBytes, KeyId, PublicKey, ReleaseKind, RolloutProgress, RolloutSettings,
    };

    const ID: &str = "3f2a9c0d1e2b44556677889900aabbccddeeff00112233445566778899aabbcc";

    fn id() -> ImageId {
        ImageId::from_hex(ID).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A release of [`ID`] to prod for `board`, rolling in stage 1 of 3.
    pub(crate) fn release(board: &str, sequence: u64) -> ReleaseInfo {
        ReleaseInfo {
            environment: "prod".parse().unwrap(),
            sequence,
            image_id: id(),
            board: board.parse().unwrap(),
            version: "1.4.2".into(),
            kind: ReleaseKind::Release,
            statement: HexBytes::default(),
            created_at: at("2026-05-01T12:00:00.000Z"),
            created_by: "admin".into(),
            state: RolloutState::Rolling,
            reason: None,
            stage: 0,
            stages: vec![5, 25, 100],
            progress: RolloutProgress {
                devices: 100,
                in_stage: 5,
                confirmed: 3,
                failed: 1,
                failure_ratio: 0.2,
            },
        }
    }

    /// An environment `name` with the server holding its key.
    pub(crate) fn env(name: &str, current: Vec<ReleaseInfo>) -> EnvironmentInfo {
        EnvironmentInfo {
            name: name.parse().unwrap(),
            upstream: None,
            rollout: RolloutSettings { stages: vec![5, 25, 100], ..RolloutSettings::default() },
            release_public_key: PublicKey([0; 32]),
            release_key_id: KeyId([0; 8]),
            server_holds_key: true,
            next_sequence: 1,
            devices: 0,
            current,
        }
    }

    #[test]
    fn times_and_ids_shorten() {
        assert_eq!(short_time(at("2026-05-01T12:00:00.123Z")), "2026-05-01 12:00:00Z");
        assert_eq!(short_time(at("2026-05-01T12:00:00Z")), "2026-05-01 12:00:00Z");
        assert_eq!(short_time(Timestamp(0)), "1970-01-01 00:00:00Z");
        assert_eq!(short_id(&id()), "3f2a9c0d1e2b");
    }

    #[test]
    fn tables_align() {
        let rows = vec![vec!["a".to_owned(), "long cell".to_owned(), String::new()]];
        assert_eq!(table(&["X", "Y", "Z"], &rows), "X  Y          Z\na  long cell\n");
    }

    #[test]
    fn status_flags_a_halted_rollout() {
        let mut halted = release("microbit", 7);
        halted.state = RolloutState::Halted;
        halted.reason = Some("failure ratio 0.40 above 0.20".into());
        halted.stage = 1;
        let text = status(&[env("dev", vec![]), env("prod", vec![release("pico", 6), halted])]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ENV   BOARD     IMAGE         VERSION  SEQ  STATE      STAGE      CONFIRMED  FAILED  \
             IN-STAGE"
        );
        assert!(lines[1].starts_with("dev   -         (no release)  -"), "{text}");
        assert_eq!(
            lines[2],
            "prod  pico      3f2a9c0d1e2b  1.4.2    6    rolling    1/3 (5%)   3          1       5"
        );
        assert!(lines[3].contains("!! HALTED  2/3 (25%)"), "{text}");
        assert_eq!(lines[5], "!! prod microbit release 7 halted: failure ratio 0.40 above 0.20");
        assert_eq!(status(&[]), "no environments\n");
    }

    #[test]
    fn release_lines() {
        let mut r = release("microbit", 3);
        assert_eq!(
            super::release(&r),
            format!("prod release 3: image {ID} (microbit 1.4.2), rolling, stage 1/3 (5%)\n")
        );
        r.kind = ReleaseKind::Rollback;
        r.state = RolloutState::Paused;
        r.reason = Some("operator".into());
        r.stages.clear();
        assert_eq!(
            super::release(&r),
            format!(
                "prod rollback 3: image {ID} (microbit 1.4.2), paused, stage -\n  paused: operator\n"
            )
        );
    }

    #[test]
    fn device_rows() {
        let mut d = DeviceInfo {
            id: "dev-001".parse().unwrap(),
            board: "microbit".parse().unwrap(),
            environment: "dev".parse().unwrap(),
            state: DeviceState::Unseen,
            running: None,
            confirmed: false,
            failed_image: None,
            slot_b: None,
            last_outcome: None,
            release_sequence: None,
            bucket: 17,
            enrolled_at: at("2026-05-01T12:00:00.000Z"),
            last_seen: None,
        };
        assert_eq!(device_row(&d)[4..], ["-", "-", "never"]);
        d.running = Some(id());
        d.last_seen = Some(at("2026-05-02T08:30:00.250Z"));
        assert_eq!(device_row(&d)[4..], ["3f2a9c0d1e2b", "trial", "2026-05-02 08:30:00Z"]);
        d.confirmed = true;
        assert_eq!(device_row(&d)[5], "yes");
        assert_eq!(devices(&[]), "no devices\n");
        let created = DeviceCreated { device: d.clone(), token: "tok123".into() };
        assert!(device_created(&created).contains("\ntoken: tok123\n"));
        let detail = DeviceDetail { device: d, events: vec![] };
        let text = device_detail(&detail);
        assert!(text.contains(&format!("\nrunning           {ID}\n")), "{text}");
        assert!(text.contains("\nslot B            -\n"), "{text}");
        assert!(text.ends_with("\nno events\n"), "{text}");
    }
}
