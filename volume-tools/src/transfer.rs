//! `dump` and `restore`: moving a volume's dump stream between the
//! fileserver and a file, with a progress bar on a terminal.

use anyhow::{Context, bail};
use cellfs_protocol::pieces::ReadPieces;
use cellfs_protocol::transport::RpcClient;
use cellfs_protocol::{Reply, Request, Timestamp};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

/// A byte progress bar on standard error when it is a terminal, hidden otherwise.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("#> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Dumps volume `name` into `file` (standard output when `None`). A file is
/// written under a temporary name and renamed when complete, so an
/// interrupted dump never leaves a file that looks whole.
pub async fn dump(
    client: &RpcClient,
    name: &str,
    file: Option<&Path>,
    since: Option<Timestamp>,
) -> anyhow::Result<String> {
    let req = Request::DumpVolume {
        name: name.to_owned(),
        since,
    };
    let progress = bar(0, "dump");
    let update = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let Some(file) = file else {
        let mut out = tokio::io::stdout();
        let len = client
            .dump_volume(&req, &mut out, update)
            .await
            .with_context(|| format!("cannot dump volume {name:?}"))?;
        progress.finish_and_clear();
        eprintln!("dumped volume {name}: {len} bytes");
        return Ok(String::new());
    };
    let partial = partial_path(file);
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let result = client.dump_volume(&req, &mut out, update).await;
    progress.finish_and_clear();
    let len = match result {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e).with_context(|| format!("cannot dump volume {name:?}"));
        }
    };
    out.sync_all()
        .await
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file).with_context(|| format!("cannot rename {} into place", partial.display()))?;
    let kind = if since.is_some() { "incremental dump" } else { "dump" };
    Ok(format!(
        "{kind} of volume {name} written to {} ({len} bytes)\n",
        file.display()
    ))
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// Restores the dump in `file` as volume `name`.
pub async fn restore(
    client: &RpcClient,
    name: &str,
    file: &Path,
    overwrite: bool,
    server: Option<&str>,
) -> anyhow::Result<String> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open dump {}", file.display()))?;
    let len = f
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let req = Request::RestoreVolume {
        name: name.to_owned(),
        len,
        overwrite,
        server: server.map(str::to_owned),
    };
    let progress = bar(len, "restore");
    let mut reader = ReadPieces(progress.wrap_async_read(f));
    let reply = client.call_with_data(&req, len, &mut reader).await;
    progress.finish_and_clear();
    let v = match reply.with_context(|| format!("cannot restore volume {name:?} from {}", file.display()))? {
        Reply::Volume(v) => v,
        other => bail!("unexpected reply to RestoreVolume: {other:?}"),
    };
    Ok(format!(
        "restored volume {} (id {}): {} files, {} bytes of data\n",
        v.name, v.id, v.files, v.used
    ))
}
