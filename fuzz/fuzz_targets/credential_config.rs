//! Arbitrary text as the `external_account` credential configuration.
//!
//! The configuration decides where the broker sends AWS-signed subject tokens and Google
//! tokens, so whatever `CredentialConfig::parse` accepts must name only the endpoints the
//! README promises: Google URLs over https on a subdomain of `googleapis.com` or of the
//! configured `universe_domain` (or on loopback, when loopback is allowed), and an AWS STS
//! verification URL. Allowing loopback may only admit more, never change what is accepted.

#![no_main]

use gcp_wif_broker::credential_config::CredentialConfig;
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = CredentialConfig::parse(text, false);
    let lenient = CredentialConfig::parse(text, true);

    if let Ok(config) = &strict {
        assert_eq!(
            lenient.as_ref().ok(),
            Some(config),
            "accepted without loopback but not the same with it"
        );
    }
    if let Ok(config) = &strict {
        check_endpoints(config, false);
    }
    if let Ok(config) = &lenient {
        check_endpoints(config, true);
    }
});

/// Panics unless every URL in `config` is one the endpoint policy admits.
fn check_endpoints(config: &CredentialConfig, allow_loopback: bool) {
    check_google(&config.token_url, &config.universe_domain, allow_loopback);
    if let Some(impersonation) = &config.impersonation {
        check_google(&impersonation.url, &config.universe_domain, allow_loopback);
        assert!(
            impersonation
                .url
                .path()
                .contains(&format!("/{}:", impersonation.service_account)),
            "service account {} is not the one in {}",
            impersonation.service_account,
            impersonation.url
        );
    }

    let verification = config
        .verification_url("us-east-1")
        .expect("an accepted template gives a verification URL for a valid region");
    let host = verification.host_str().unwrap_or_default();
    assert!(
        verification.scheme() == "https"
            && verification.port().is_none()
            && verification.username().is_empty()
            && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")),
        "verification URL {verification} is not AWS STS"
    );
}

fn check_google(url: &Url, universe_domain: &str, allow_loopback: bool) {
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url} carries user information"
    );
    let loopback = match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback {
        assert!(allow_loopback, "{url} is loopback, which was not allowed");
        assert!(
            matches!(url.scheme(), "http" | "https"),
            "{url} is neither http nor https"
        );
        return;
    }
    let host = match url.host() {
        Some(Host::Domain(domain)) => domain.to_ascii_lowercase(),
        _ => panic!("{url} has no DNS host"),
    };
    assert!(
        url.scheme() == "https" && url.port().is_none(),
        "{url} is not https on the default port"
    );
    let under = |domain: &str| {
        host.strip_suffix(domain)
            .and_then(|labels| labels.strip_suffix('.'))
            .is_some_and(|labels| !labels.is_empty() && !labels.split('.').any(str::is_empty))
    };
    assert!(
        under("googleapis.com") || under(universe_domain),
        "{url} is under neither googleapis.com nor universe domain {universe_domain}"
    );
}
