//! Fixtures for tests: chart archives, a chart source served on 127.0.0.1
//! (a Helm repository and an OCI registry, `testdata/chart-server/serve.py`,
//! with optional basic auth and TLS), and certificates from a test CA.

use crate::archive::package;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
/// Entry kinds for [`raw_archive`].
pub use tar::EntryType;

/// A packaged chart named `name` at `version`, with a ConfigMap template
/// and `extra` files (paths relative to the chart).
pub fn chart(name: &str, version: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let chart_yaml = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  chart: {name}\n  version: \"{version}\"\n  value: {{{{ .Values.value | default \"default\" | quote }}}}\n"
    );
    let mut files: Vec<(&str, &[u8])> = vec![
        ("Chart.yaml", chart_yaml.as_bytes()),
        ("templates/configmap.yaml", template.as_bytes()),
    ];
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    for (p, c) in &extra {
        files.retain(|(q, _)| q != p);
        files.push((p.as_str(), c.as_bytes()));
    }
    package(name, &files)
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA and a certificate it issued for 127.0.0.1 and localhost.
pub struct TestCa {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::{PKey, Private};
        use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
        use openssl::x509::{X509, X509Builder, X509NameBuilder};
        let key = || -> PKey<Private> {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
            PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
        };
        let build = |cn: &str,
                     key: &PKey<Private>,
                     issuer: Option<(&X509, &PKey<Private>)>,
                     serial: u32|
         -> X509 {
            let mut name = X509NameBuilder::new().expect("name");
            name.append_entry_by_text("CN", cn).expect("cn");
            let name = name.build();
            let mut b = X509Builder::new().expect("builder");
            b.set_version(2).expect("version");
            b.set_serial_number(
                &BigNum::from_u32(serial)
                    .expect("bn")
                    .to_asn1_integer()
                    .expect("int"),
            )
            .expect("serial");
            b.set_subject_name(&name).expect("subject");
            b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
                .expect("issuer");
            b.set_pubkey(key).expect("pubkey");
            b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
                .expect("nb");
            b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
                .expect("na");
            if issuer.is_none() {
                b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                    .expect("ext");
            } else {
                let san = SubjectAlternativeName::new()
                    .ip("127.0.0.1")
                    .dns("localhost")
                    .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
                    .expect("san");
                b.append_extension(san).expect("ext");
            }
            b.sign(
                issuer.map(|(_, k)| k).unwrap_or(key),
                MessageDigest::sha256(),
            )
            .expect("sign");
            b.build()
        };
        let ca_key = key();
        let ca = build("flotilla test CA", &ca_key, None, 1);
        let leaf_key = key();
        let leaf = build("127.0.0.1", &leaf_key, Some((&ca, &ca_key)), 2);
        TestCa {
            ca_pem: ca.to_pem().expect("pem"),
            cert_pem: leaf.to_pem().expect("pem"),
            key_pem: leaf_key.private_key_to_pem_pkcs8().expect("pem"),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

type Published = BTreeMap<(String, String), (String, Option<String>)>;

/// How the chart server runs.
#[derive(Default)]
pub struct ServerOptions<'a> {
    pub auth: Option<(&'a str, &'a str)>,
    pub tls: Option<&'a TestCa>,
}

/// `testdata/chart-server/serve.py`: a Helm repository under `/` and an
/// OCI registry under `/v2/`, killed on drop.
pub struct ChartServer {
    child: Child,
    pub port: u16,
    pub tls: bool,
    dir: TempDir,
    /// (chart, version) -> (archive file, digest in the index).
    charts: std::sync::Mutex<Published>,
}

impl ChartServer {
    pub fn start(options: ServerOptions<'_>) -> Self {
        let dir = TempDir::new("flotilla-chart-server");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/chart-server/serve.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.path());
        if let Some((u, p)) = options.auth {
            cmd.args(["--user", u, "--password", p]);
        }
        if let Some(ca) = options.tls {
            let cert = dir.path().join(".tls-cert.pem");
            let key = dir.path().join(".tls-key.pem");
            std::fs::write(&cert, &ca.cert_pem).expect("cert");
            std::fs::write(&key, &ca.key_pem).expect("key");
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 serve.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().expect("a port");
        ChartServer {
            child,
            port,
            tls: options.tls.is_some(),
            dir,
            charts: Default::default(),
        }
    }

    /// The repository's URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The registry path charts are pushed under: `oci://127.0.0.1:<port>/charts`.
    pub fn oci(&self) -> String {
        format!("oci://127.0.0.1:{}/charts", self.port)
    }

    /// Publishes a packaged chart in the repository (its `index.yaml`
    /// rewritten, with digests unless `with_digest` is false) and the
    /// registry.
    pub fn publish(&self, name: &str, version: &str, archive: &[u8], with_digest: bool) {
        let file = format!("{name}-{version}.tgz");
        std::fs::write(self.dir.path().join(&file), archive).expect("archive");
        let oci = self.dir.path().join("oci/charts").join(name);
        std::fs::create_dir_all(&oci).expect("oci dir");
        std::fs::write(
            oci.join(format!("{}.tgz", version.replace('+', "_"))),
            archive,
        )
        .expect("oci");
        let digest = with_digest.then(|| {
            crate::resolver::sha256(archive)
                .trim_start_matches("sha256:")
                .to_owned()
        });
        self.charts
            .lock()
            .expect("charts")
            .insert((name.to_owned(), version.to_owned()), (file, digest));
        self.write_index();
    }

    /// Lists in the index a version whose archive is at `url`, an absolute
    /// URL (another server's, say).
    pub fn link(&self, name: &str, version: &str, url: &str, digest: Option<&str>) {
        self.charts.lock().expect("charts").insert(
            (name.to_owned(), version.to_owned()),
            (
                url.to_owned(),
                digest.map(|d| d.trim_start_matches("sha256:").to_owned()),
            ),
        );
        self.write_index();
    }

    fn write_index(&self) {
        let charts = self.charts.lock().expect("charts");
        let mut index = String::from("apiVersion: v1\nentries:\n");
        let mut last = String::new();
        for ((n, v), (f, d)) in charts.iter() {
            if *n != last {
                index.push_str(&format!("  {n}:\n"));
                last = n.clone();
            }
            index.push_str(&format!(
                "  - name: {n}\n    version: \"{v}\"\n    urls: [\"{f}\"]\n"
            ));
            if let Some(d) = d {
                index.push_str(&format!("    digest: {d}\n"));
            }
        }
        std::fs::write(self.dir.path().join("index.yaml"), index).expect("index");
    }

    /// Overwrites a published archive (to test digest checks).
    pub fn tamper(&self, name: &str, version: &str, archive: &[u8]) {
        std::fs::write(
            self.dir.path().join(format!("{name}-{version}.tgz")),
            archive,
        )
        .expect("archive");
    }

    /// How often each path was fetched.
    pub fn fetches(&self, path: &str) -> u64 {
        let stats = self.stats();
        stats.get(path).copied().unwrap_or(0)
    }

    /// Every path and how often it was fetched (index.yaml, archives,
    /// registry calls).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let scheme_host = format!("127.0.0.1:{}", self.port);
        let mut stream = std::net::TcpStream::connect(&scheme_host).expect("connect");
        if self.tls {
            // The stats endpoint is read over plain TCP only without TLS;
            // with TLS, count through a second, plain server is overkill:
            // use openssl directly.
            use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
            let mut b = SslConnector::builder(SslMethod::tls()).expect("ssl");
            b.set_verify(SslVerifyMode::NONE);
            let mut s = b.build().connect("127.0.0.1", stream).expect("tls");
            return read_stats(&mut s);
        }
        read_stats(&mut stream)
    }
}

fn read_stats(s: &mut (impl std::io::Read + std::io::Write)) -> BTreeMap<String, u64> {
    s.write_all(b"GET /_stats HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("{}");
    serde_json::from_str(body).unwrap_or_default()
}

impl Drop for ChartServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Packages the chart in directory `dir` (e.g. `testdata/charts/x`),
/// with `version` written into its Chart.yaml.
pub fn package_dir(dir: &Path, version: &str) -> (String, Vec<u8>) {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).expect("chart dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("inside")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&p).expect("chart file")));
            }
        }
    }
    walk(dir, dir, &mut files);
    let mut name = String::new();
    for (rel, bytes) in files.iter_mut() {
        if rel == "Chart.yaml" {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let mut out = String::new();
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("name:") {
                    name = n.trim().to_owned();
                }
                if line.starts_with("version:") {
                    out.push_str(&format!("version: {version}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            *bytes = out.into_bytes();
        }
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let archive = package(&name, &refs);
    (name, archive)
}

/// Every file under `src`, with each `(from, to)` of `replace` applied to
/// its text: `testdata/repos/fleet-examples-helm` pointed at a test
/// server. (path relative to `src`, contents)
pub fn repo_files(src: &Path, replace: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, replace: &[(&str, &str)], out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).expect("repo dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, replace, out);
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .replace('\\', "/");
            let mut text = String::from_utf8(std::fs::read(&p).expect("file")).expect("UTF-8");
            for (from, to) in replace {
                text = text.replace(from, to);
            }
            out.push((rel, text.into_bytes()));
        }
    }
    let mut out = Vec::new();
    walk(src, src, replace, &mut out);
    out
}

/// The placeholders of `testdata/repos/fleet-examples-helm` and what
/// they become for `server`.
pub fn fleet_examples_replacements(server: &ChartServer) -> Vec<(String, String)> {
    vec![
        ("https://charts.example.invalid".into(), server.url()),
        (
            "oci://charts.example.invalid".into(),
            format!("oci://127.0.0.1:{}", server.port),
        ),
    ]
}

/// The repository's test charts (`testdata/charts`), published on `server`
/// at the versions fleet-examples-helm asks for.
pub fn publish_test_charts(server: &ChartServer) {
    let charts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/charts");
    for (dir, version) in [
        ("guestbook", "0.0.0"),
        ("guestbook", "0.1.0"),
        ("monitoring-crd", "104.1.0+up57.0.3"),
    ] {
        let (name, archive) = package_dir(&charts.join(dir), version);
        server.publish(&name, version, &archive, true);
    }
}

/// A chart archive written raw, so that hostile entries get in (`..`,
/// absolute paths, links to `/etc/passwd`).
pub fn raw_archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        if kind.is_symlink() {
            h.set_link_name("/etc/passwd").expect("link name");
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &out).expect("in-memory gzip");
    gz.finish().expect("in-memory gzip")
}

/// A small archive of chart `name` that inflates to `inflated` bytes of
/// zeros: a gzip bomb.
pub fn gzip_bomb(name: &str, inflated: usize) -> Vec<u8> {
    let chart_yaml = format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n");
    let zeros = vec![0u8; inflated];
    raw_archive(&[
        (
            &format!("{name}/Chart.yaml"),
            tar::EntryType::Regular,
            chart_yaml.as_bytes(),
        ),
        (
            &format!("{name}/templates/zeros.yaml"),
            tar::EntryType::Regular,
            &zeros,
        ),
    ])
}
