//! `imager trust`: trust statements signed offline with the root key(s), like `promote` signs
//! releases with the prod key. Each command writes the next statement to a file (its signed
//! wire form, `docs/trust.md`) after checking it the way a device will: a statement the
//! device would refuse is never written.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use firmware::image::{EnvironmentName, KeyId, TrustedKey};
use firmware::trust::{
    self, Anchor, EnvironmentKeys, MAX_RETIRED_KEYS, RootKeys, SignedTrust, TRUST_FORMAT,
    TrustStatement,
};
use serde::Serialize;

use crate::keys::{read_public_key, read_signing_key};

/// `imager trust ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TrustCommand {
    /// Write version 1: the root named by the provisioning record signs the first keys.
    Init(InitArgs),
    /// Write the next version with new keys for a role: the build keys (the previous ones are
    /// retired: their installed images keep booting), an environment's release keys, or the
    /// root itself (signed by the old root and the new).
    Rotate(RotateArgs),
    /// Write the next version without the given keys (soft by default: a revoked build key's
    /// installed image keeps booting until replaced; --hard drops it entirely).
    Revoke(RevokeArgs),
    /// Describe statements; given several, oldest first, check that each extends the one
    /// before it as a device would.
    Show(ShowArgs),
}

/// `imager trust init`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The root keys' public halves go into each device's provisioning record \
(FWI_ROOT_KEYS at bootloader build); keep the private halves offline. Format: docs/trust.md.")]
pub struct InitArgs {
    /// A root private key (PKCS#8 PEM); repeatable (at most 2). Each signs.
    #[arg(long = "root", value_name = "PEM", required = true)]
    pub roots: Vec<PathBuf>,
    /// Root signatures a statement needs (default: 1).
    #[arg(long, default_value_t = 1)]
    pub threshold: u8,
    /// A build public key (SPKI PEM, or a private key's public half); repeatable.
    #[arg(long = "build", value_name = "PEM", required = true)]
    pub build: Vec<PathBuf>,
    /// An environment's release public key, as ENV=PEM; repeatable.
    #[arg(long = "env", value_name = "ENV=PEM")]
    pub environments: Vec<String>,
    /// Output file; never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `imager trust rotate`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The current statement.
    pub previous: PathBuf,
    /// A current root private key to sign with; repeatable (up to the threshold).
    #[arg(long = "sign", value_name = "PEM", required = true)]
    pub sign: Vec<PathBuf>,
    /// New build public keys (replace the current ones, which are retired); repeatable.
    #[arg(long = "build", value_name = "PEM")]
    pub build: Vec<PathBuf>,
    /// New release public keys of an environment, as ENV=PEM (replace its current ones);
    /// repeatable.
    #[arg(long = "env", value_name = "ENV=PEM")]
    pub environments: Vec<String>,
    /// A new root private key (it signs too, as TUF's rule needs); repeatable.
    #[arg(long = "new-root", value_name = "PEM")]
    pub new_roots: Vec<PathBuf>,
    /// The new root's threshold (default: 1).
    #[arg(long, requires = "new_roots")]
    pub threshold: Option<u8>,
    /// Output file; never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `imager trust revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The current statement.
    pub previous: PathBuf,
    /// A current root private key to sign with; repeatable.
    #[arg(long = "sign", value_name = "PEM", required = true)]
    pub sign: Vec<PathBuf>,
    /// Key id (16 hex digits) of a build or release key to revoke; repeatable.
    #[arg(long = "key", value_name = "KEY_ID", required = true, value_parser = key_id)]
    pub keys: Vec<KeyId>,
    /// Drop a build key entirely, also for images already installed (a device then refuses
    /// the statement until it runs an image signed by another key).
    #[arg(long)]
    pub hard: bool,
    /// Output file; never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

fn key_id(text: &str) -> Result<KeyId, String> {
    KeyId::from_hex(text).ok_or_else(|| format!("{text:?} is not a key id (16 hex digits)"))
}

/// `imager trust show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Statement files, oldest first.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The provisioned root's public key (SPKI PEM); repeatable: checks the first file too.
    #[arg(long = "root", value_name = "PEM")]
    pub roots: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What changes from one version to the next.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// New build keys (the current ones not among them are retired).
    pub build: Vec<[u8; 32]>,
    /// New release keys per environment.
    pub environments: Vec<(EnvironmentName, Vec<[u8; 32]>)>,
    /// A new root.
    pub root: Option<RootKeys>,
    /// Keys to revoke.
    pub revoke: Vec<KeyId>,
    /// Revoke build keys entirely rather than retire them.
    pub hard: bool,
}

/// Version 1, signed by `roots`, which become its root with `threshold`.
pub fn init(
    roots: &[SigningKey],
    threshold: u8,
    build: &[[u8; 32]],
    environments: &[(EnvironmentName, Vec<[u8; 32]>)],
) -> Result<Vec<u8>> {
    let root = root_of(roots, threshold)?;
    let statement = TrustStatement {
        format: TRUST_FORMAT,
        version: 1,
        root: root.clone(),
        build_keys: bounded(build, "build keys")?,
        retired_build_keys: heapless::Vec::new(),
        environments: heapless::Vec::new(),
    };
    let statement = with_environments(statement, environments)?;
    sign_checked(&Anchor { version: 0, root }, &statement, roots)
}

/// The statement after `previous` with `change`, signed by `signers` (the current root's keys
/// and, for a root rotation, the new root's), checked as a device would check it.
pub fn next(previous: &[u8], change: &Change, signers: &[SigningKey]) -> Result<Vec<u8>> {
    let previous = SignedTrust::parse(previous).map_err(|e| anyhow!("current statement: {e}"))?;
    let mut statement = previous.statement().clone();
    statement.version = statement
        .version
        .checked_add(1)
        .ok_or_else(|| anyhow!("the current statement's version is the last one"))?;
    if !change.build.is_empty() {
        let mut retired: Vec<[u8; 32]> = statement.retired_build_keys.to_vec();
        for key in &statement.build_keys {
            if !change.build.contains(key) && !retired.contains(key) {
                retired.push(*key);
            }
        }
        retired.retain(|k| !change.build.contains(k));
        if retired.len() > MAX_RETIRED_KEYS {
            bail!(
                "rotating would retire {} build keys, at most {MAX_RETIRED_KEYS} fit: revoke \
                 one with `imager trust revoke --hard` first",
                retired.len()
            );
        }
        statement.build_keys = bounded(&change.build, "build keys")?;
        statement.retired_build_keys = bounded(&retired, "retired build keys")?;
    }
    statement = with_environments(statement, &change.environments)?;
    if let Some(root) = &change.root {
        statement.root = root.clone();
    }
    for id in &change.revoke {
        revoke(&mut statement, *id, change.hard)?;
    }
    sign_checked(&Anchor::of(&previous), &statement, signers)
}

fn revoke(statement: &mut TrustStatement, id: KeyId, hard: bool) -> Result<()> {
    let of = |k: &[u8; 32]| KeyId::of_public_key(k) == id;
    let mut found = false;
    if let Some(at) = statement.build_keys.iter().position(of) {
        let key = statement.build_keys.remove(at);
        found = true;
        if !hard {
            statement.retired_build_keys.push(key).map_err(|_| {
                anyhow!("revoking {id} would retire more than {MAX_RETIRED_KEYS} build keys: use --hard for one")
            })?;
        }
    }
    if hard && let Some(at) = statement.retired_build_keys.iter().position(of) {
        statement.retired_build_keys.remove(at);
        found = true;
    }
    for env in &mut statement.environments {
        if let Some(at) = env.keys.iter().position(of) {
            env.keys.remove(at);
            found = true;
        }
    }
    if !found {
        bail!("key {id} is not in the current statement (see `imager trust show`)");
    }
    Ok(())
}

fn root_of(keys: &[SigningKey], threshold: u8) -> Result<RootKeys> {
    let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    Ok(RootKeys { threshold, keys: bounded(&publics, "root keys")? })
}

fn bounded<const N: usize>(keys: &[[u8; 32]], what: &str) -> Result<heapless::Vec<[u8; 32], N>> {
    heapless::Vec::from_slice(keys)
        .map_err(|_| anyhow!("{} {what} given, at most {N} fit", keys.len()))
}

fn with_environments(
    mut statement: TrustStatement,
    environments: &[(EnvironmentName, Vec<[u8; 32]>)],
) -> Result<TrustStatement> {
    for (name, keys) in environments {
        let keys = bounded(keys, &format!("release keys for {name}"))?;
        match statement.environments.iter_mut().find(|e| &e.name == name) {
            Some(env) => env.keys = keys,
            None => statement
                .environments
                .push(EnvironmentKeys { name: name.clone(), keys })
                .map_err(|_| anyhow!("at most {} environments fit", trust::MAX_ENVIRONMENTS))?,
        }
    }
    Ok(statement)
}

fn sign_checked(
    anchor: &Anchor,
    statement: &TrustStatement,
    signers: &[SigningKey],
) -> Result<Vec<u8>> {
    let refs: Vec<&SigningKey> = signers.iter().collect();
    let bytes =
        SignedTrust::sign(statement, &refs).map_err(|e| anyhow!("the new statement: {e}"))?;
    let parsed = SignedTrust::parse(&bytes).map_err(|e| anyhow!("the new statement: {e}"))?;
    trust::accept(anchor, &parsed).map_err(|e| {
        anyhow!(
            "a device on version {} would refuse version {}: {e}",
            anchor.version,
            statement.version
        )
    })?;
    Ok(bytes)
}

/// A statement described for `show` and the server.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatementView {
    /// Its version.
    pub version: u32,
    /// Root signatures needed.
    pub root_threshold: u8,
    /// Root key ids.
    pub root_keys: Vec<String>,
    /// Build key ids.
    pub build_keys: Vec<String>,
    /// Retired build key ids.
    pub retired_build_keys: Vec<String>,
    /// Release key ids per environment.
    pub environments: Vec<(String, Vec<String>)>,
    /// Who signed it.
    pub signed_by: Vec<String>,
}

fn ids(keys: &[[u8; 32]]) -> Vec<String> {
    keys.iter().map(|k| KeyId::of_public_key(k).to_string()).collect()
}

impl StatementView {
    /// The view of a signed statement.
    pub fn of(signed: &SignedTrust<'_>) -> Self {
        let s = signed.statement();
        StatementView {
            version: s.version,
            root_threshold: s.root.threshold,
            root_keys: ids(&s.root.keys),
            build_keys: ids(&s.build_keys),
            retired_build_keys: ids(&s.retired_build_keys),
            environments: s
                .environments
                .iter()
                .map(|e| (e.name.to_string(), ids(&e.keys)))
                .collect(),
            signed_by: signed.signers().map(|id| id.to_string()).collect(),
        }
    }
}

/// Parses `files` (oldest first) and checks each extends the one before; the first against
/// `root` (the provisioned root) when given.
pub fn check_chain(files: &[Vec<u8>], root: Option<RootKeys>) -> Result<Vec<StatementView>> {
    let mut anchor = root.map(|root| Anchor { version: 0, root });
    let mut views = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        let parsed = SignedTrust::parse(bytes).map_err(|e| anyhow!("statement {}: {e}", i + 1))?;
        if let Some(anchor) = &anchor {
            trust::accept(anchor, &parsed).map_err(|e| {
                anyhow!(
                    "statement {} (version {}) does not extend version {}: {e}",
                    i + 1,
                    parsed.version(),
                    anchor.version
                )
            })?;
        }
        anchor = Some(Anchor::of(&parsed));
        views.push(StatementView::of(&parsed));
    }
    Ok(views)
}

fn signing_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    paths.iter().map(|p| read_signing_key(p)).collect()
}

fn public_keys(paths: &[PathBuf]) -> Result<Vec<[u8; 32]>> {
    paths.iter().map(|p| read_public_key(p).map(|k| TrustedKey::to_bytes(&k))).collect()
}

/// `ENV=PEM` pairs, grouped per environment.
fn environment_keys(pairs: &[String]) -> Result<Vec<(EnvironmentName, Vec<[u8; 32]>)>> {
    let mut out: Vec<(EnvironmentName, Vec<[u8; 32]>)> = Vec::new();
    for pair in pairs {
        let (name, path) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {pair:?}: expected ENV=PEM, e.g. prod=prod.pub.pem"))?;
        if !firmware::image::is_valid_board_name(name) {
            bail!("--env {pair:?}: {name:?} is not an environment name (1 to 32 of [a-z0-9_-])");
        }
        let name = EnvironmentName::try_from(name)
            .map_err(|_| anyhow!("--env {pair:?}: environment name longer than 32 bytes"))?;
        let key = read_public_key(Path::new(path))?.to_bytes();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, keys)) => keys.push(key),
            None => out.push((name, vec![key])),
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs `imager trust ...`, writing its output to `out`.
pub fn run(command: &TrustCommand, out: &mut dyn Write) -> Result<()> {
    let (bytes, path) = match command {
        TrustCommand::Init(a) => {
            let bytes = init(
                &signing_keys(&a.roots)?,
                a.threshold,
                &public_keys(&a.build)?,
                &environment_keys(&a.environments)?,
            )?;
            (bytes, &a.out)
        }
        TrustCommand::Rotate(a) => {
            let mut signers = signing_keys(&a.sign)?;
            let new_roots = signing_keys(&a.new_roots)?;
            let root = match new_roots.is_empty() {
                true => None,
                false => Some(root_of(&new_roots, a.threshold.unwrap_or(1))?),
            };
            signers.extend(new_roots);
            let change = Change {
                build: public_keys(&a.build)?,
                environments: environment_keys(&a.environments)?,
                root,
                ..Change::default()
            };
            if change.build.is_empty() && change.environments.is_empty() && change.root.is_none() {
                bail!("nothing to rotate: give --build, --env or --new-root");
            }
            (next(&read(&a.previous)?, &change, &signers)?, &a.out)
        }
        TrustCommand::Revoke(a) => {
            let change = Change { revoke: a.keys.clone(), hard: a.hard, ..Change::default() };
            (next(&read(&a.previous)?, &change, &signing_keys(&a.sign)?)?, &a.out)
        }
        TrustCommand::Show(a) => {
            let files = a.files.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
            let root = match a.roots.is_empty() {
                true => None,
                false => Some(RootKeys {
                    threshold: 1,
                    keys: bounded(&public_keys(&a.roots)?, "root keys")?,
                }),
            };
            let views = check_chain(&files, root)?;
            if a.json {
                serde_json::to_writer_pretty(&mut *out, &views)?;
                writeln!(out)?;
            } else {
                for view in &views {
                    write_view(out, view)?;
                }
                if views.len() > 1 {
                    writeln!(out, "chain: each version extends the one before")?;
                }
            }
            return Ok(());
        }
    };
    crate::write::create_new(path, &bytes, false)?;
    let parsed = SignedTrust::parse(&bytes).map_err(|e| anyhow!("{e}"))?;
    writeln!(out, "{}: trust statement version {}", path.display(), parsed.version())?;
    write_view(out, &StatementView::of(&parsed))
}

fn write_view(out: &mut dyn Write, v: &StatementView) -> Result<()> {
    writeln!(out, "version {}", v.version)?;
    writeln!(
        out,
        "  root ({} of {}): {}",
        v.root_threshold,
        v.root_keys.len(),
        v.root_keys.join(" ")
    )?;
    writeln!(out, "  build: {}", v.build_keys.join(" "))?;
    if !v.retired_build_keys.is_empty() {
        writeln!(
            out,
            "  retired build (installed images keep booting): {}",
            v.retired_build_keys.join(" ")
        )?;
    }
    for (name, keys) in &v.environments {
        writeln!(out, "  release {name}: {}", keys.join(" "))?;
    }
    writeln!(out, "  signed by: {}", v.signed_by.join(" "))?;
    Ok(())
}
