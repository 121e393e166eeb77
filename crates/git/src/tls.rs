//! A GitRepo's `caBundle`: the server's certificate is accepted when one of
//! the bundle's certificates issued it (or is it) and it names the host.
//! libgit2 hands the callback only the leaf certificate, so a chain through
//! an intermediate needs the intermediate in the bundle too.

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};

/// Whether the DER certificate `leaf` chains to `bundle` (PEM) and is valid
/// for `host`. Any parse error is a "no".
pub fn verify(bundle: &[u8], leaf: &[u8], host: &str) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let leaf = X509::from_der(leaf)?;
        let mut store = X509StoreBuilder::new()?;
        for ca in X509::stack_from_pem(bundle)? {
            store.add_cert(ca)?;
        }
        let mut param = X509VerifyParam::new()?;
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param.set_host(host)?,
        }
        store.set_param(&param)?;
        let store = store.build();
        let chain = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&store, &leaf, &chain, |c| c.verify_cert())
    };
    run().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn cert(
        cn: &str,
        san: Option<&str>,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        ca: bool,
    ) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
            .unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
        }
        if let Some(san) = san {
            let ext = SubjectAlternativeName::new()
                .dns(san)
                .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(
            issuer.map(|(_, k)| k).unwrap_or(key),
            MessageDigest::sha256(),
        )
        .unwrap();
        b.build()
    }

    #[test]
    fn chains_to_the_bundle_and_names_the_host() {
        let ca_key = key();
        let ca = cert("test ca", None, &ca_key, None, true);
        let leaf_key = key();
        let leaf = cert(
            "git.test",
            Some("git.test"),
            &leaf_key,
            Some((&ca, &ca_key)),
            false,
        );
        let bundle = ca.to_pem().unwrap();
        let der = leaf.to_der().unwrap();
        assert!(verify(&bundle, &der, "git.test"));
        assert!(!verify(&bundle, &der, "other.test"), "wrong host");
        let stranger = cert("other ca", None, &key(), None, true).to_pem().unwrap();
        assert!(!verify(&stranger, &der, "git.test"), "another CA");
        assert!(!verify(b"not pem", &der, "git.test"));
        assert!(!verify(&bundle, b"not der", "git.test"));
    }
}
