//! `flotilla crds`: the CRDs the chart installs.

use anyhow::Context;
use flotilla_api::crds;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one `<name>.yaml` per CRD into this directory instead of
    /// printing a multi-document stream.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> anyhow::Result<()> {
    let Some(dir) = &args.out_dir else {
        std::io::stdout()
            .write_all(crds::all_yaml().as_bytes())
            .context("writing to stdout")?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in crds::all() {
        let path = dir.join(crds::file_name(&crd));
        std::fs::write(&path, crds::to_yaml(&crd))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
