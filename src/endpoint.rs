//! Which upstream URLs the broker will send credentials to.
//!
//! A credential configuration names the URLs that receive the AWS-signed subject token and the
//! federated token. A configuration pointing anywhere else would hand those credentials to a
//! stranger, so every URL is checked once, at start-up, against the hosts Google and AWS use.

use url::{Host, Url};

/// The universe domain of Google's public cloud.
pub const DEFAULT_UNIVERSE_DOMAIN: &str = "googleapis.com";

/// The hosts the broker accepts as upstream endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    universe_domain: String,
    allow_loopback: bool,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The text is not an absolute URL.
    #[error("is not a valid absolute URL")]
    Malformed,
    /// The URL carries a user name or password, a classic way to disguise the real host.
    #[error("must not contain user information (`user@host`)")]
    UserInfo,
    /// The scheme is not https (or http on loopback where that is allowed).
    #[error("must use https")]
    Scheme,
    /// The host is not one of the accepted hosts.
    #[error("host `{0}` is not {1}")]
    Host(String, &'static str),
    /// A port other than the scheme's default.
    #[error("must not name a non-default port")]
    Port,
}

impl EndpointPolicy {
    /// A policy for Google hosts under `universe_domain`; `allow_loopback` also admits plain
    /// http on 127.0.0.1, localhost and [::1], for the bundled emulator.
    pub fn new(universe_domain: &str, allow_loopback: bool) -> Self {
        Self {
            universe_domain: universe_domain.to_ascii_lowercase(),
            allow_loopback,
        }
    }

    /// Whether loopback endpoints are admitted.
    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// Checks a URL that will receive Google credentials (STS, IAM Credentials, Vertex AI).
    ///
    /// Accepted: https on a subdomain of `googleapis.com` (global, regional `*.rep.`, `mtls.`,
    /// Private Service Connect `*.p.`) or of the configured universe domain; with loopback
    /// allowed, http or https on a loopback host with any port.
    pub fn check_google(&self, text: &str) -> Result<Url, EndpointError> {
        let url = parse_plain(text)?;
        if self.allow_loopback && is_loopback(&url) {
            return match url.scheme() {
                "http" | "https" => Ok(url),
                _ => Err(EndpointError::Scheme),
            };
        }
        require_https_default_port(&url)?;
        let host = domain_of(&url)?;
        let allowed = [DEFAULT_UNIVERSE_DOMAIN, self.universe_domain.as_str()]
            .iter()
            .any(|domain| is_subdomain(&host, domain));
        if !allowed {
            return Err(EndpointError::Host(host, "a Google API host"));
        }
        Ok(url)
    }
}

/// Checks the AWS STS `GetCallerIdentity` URL that the subject token names.
///
/// The broker never calls it, Google does; it must still be a real AWS STS endpoint
/// (`sts.amazonaws.com`, `sts.REGION.amazonaws.com`, or the `.amazonaws.com.cn` forms), or
/// Google would be asked to verify the signature somewhere else.
pub fn check_aws_sts(text: &str) -> Result<Url, EndpointError> {
    let url = parse_plain(text)?;
    require_https_default_port(&url)?;
    let host = domain_of(&url)?;
    let labels: Vec<&str> = host.split('.').collect();
    let is_sts = match labels.as_slice() {
        ["sts", "amazonaws", "com"] => true,
        ["sts", region, "amazonaws", "com"] | ["sts", region, "amazonaws", "com", "cn"] => {
            is_aws_region(region)
        }
        _ => false,
    };
    if !is_sts {
        return Err(EndpointError::Host(host, "an AWS STS host"));
    }
    Ok(url)
}

/// Whether `region` has the shape of an AWS region name (`us-east-1`, `ap-southeast-4`,
/// `us-gov-west-1`), so that it is safe to place into a host name.
pub fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((number, words)) = parts.split_last() else {
        return false;
    };
    words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn parse_plain(text: &str) -> Result<Url, EndpointError> {
    let url = Url::parse(text).map_err(|_| EndpointError::Malformed)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::UserInfo);
    }
    Ok(url)
}

fn require_https_default_port(url: &Url) -> Result<(), EndpointError> {
    if url.scheme() != "https" {
        return Err(EndpointError::Scheme);
    }
    // `Url::port` is None when the port is absent or equal to the scheme's default.
    if url.port().is_some() {
        return Err(EndpointError::Port);
    }
    Ok(())
}

fn domain_of(url: &Url) -> Result<String, EndpointError> {
    match url.host() {
        Some(Host::Domain(domain)) => Ok(domain.to_ascii_lowercase()),
        Some(other) => Err(EndpointError::Host(other.to_string(), "a DNS name")),
        None => Err(EndpointError::Malformed),
    }
}

fn is_subdomain(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .and_then(|prefix| prefix.strip_suffix('.'))
        .is_some_and(|labels| !labels.is_empty() && labels.split('.').all(|l| !l.is_empty()))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_hosts_are_accepted_in_all_their_forms() {
        let policy = EndpointPolicy::new(DEFAULT_UNIVERSE_DOMAIN, false);
        for url in [
            "https://sts.googleapis.com/v1/token",
            "https://sts.mtls.googleapis.com/v1/token",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken",
            "https://us-central1-aiplatform.googleapis.com",
            "https://aiplatform.eu.rep.googleapis.com",
            "https://sts-broker.p.googleapis.com/v1/token",
            "HTTPS://STS.GOOGLEAPIS.COM/v1/token",
            "https://sts.googleapis.com:443/v1/token",
        ] {
            assert!(policy.check_google(url).is_ok(), "{url} should be accepted");
        }
    }

    #[test]
    fn lookalike_and_foreign_hosts_are_refused() {
        let policy = EndpointPolicy::new(DEFAULT_UNIVERSE_DOMAIN, false);
        for url in [
            "https://sts.googleapis.com.evil.com/v1/token",
            "https://sts.googleapis.com@evil.com/v1/token",
            "https://user:pw@sts.googleapis.com/v1/token",
            "https://evilgoogleapis.com/v1/token",
            "https://googleapis.com/v1/token",
            "https://sts.googleapis.com./v1/token",
            "https://sts..googleapis.com/v1/token",
            "http://sts.googleapis.com/v1/token",
            "https://sts.googleapis.com:8443/v1/token",
            "https://142.250.0.1/v1/token",
            "ftp://sts.googleapis.com/v1/token",
            "sts.googleapis.com/v1/token",
            "http://127.0.0.1:8086/v1/token",
            "http://localhost:8086/v1/token",
        ] {
            assert!(policy.check_google(url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn universe_domain_admits_its_own_hosts_only() {
        let policy = EndpointPolicy::new("cloud.example-sovereign.eu", false);
        assert!(policy
            .check_google("https://sts.cloud.example-sovereign.eu/v1/token")
            .is_ok());
        assert!(policy
            .check_google("https://sts.googleapis.com/v1/token")
            .is_ok());
        assert!(policy
            .check_google("https://sts.cloud.example-sovereign.eu.evil.com/v1/token")
            .is_err());
    }

    #[test]
    fn loopback_is_admitted_only_when_allowed() {
        let policy = EndpointPolicy::new(DEFAULT_UNIVERSE_DOMAIN, true);
        for url in [
            "http://127.0.0.1:8086/v1/token",
            "http://localhost:9000/v1/token",
            "http://[::1]:8086/v1/token",
            "https://127.0.0.1/v1/token",
        ] {
            assert!(policy.check_google(url).is_ok(), "{url} should be accepted");
        }
        for url in [
            "http://127.0.0.2:8086/v1/token",
            "http://localhost.evil.com/v1/token",
            "http://user@127.0.0.1:8086/v1/token",
            "http://10.0.0.1/v1/token",
            "http://sts.googleapis.com/v1/token",
        ] {
            assert!(policy.check_google(url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn aws_sts_hosts_are_checked() {
        for url in [
            "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            "https://sts.us-gov-west-1.amazonaws.com?Action=GetCallerIdentity",
            "https://sts.cn-north-1.amazonaws.com.cn?Action=GetCallerIdentity",
        ] {
            assert!(check_aws_sts(url).is_ok(), "{url} should be accepted");
        }
        for url in [
            "http://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity",
            "https://sts.us-east-1.amazonaws.com.evil.com?Action=GetCallerIdentity",
            "https://sts.amazonaws.com@evil.com?Action=GetCallerIdentity",
            "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity",
            "https://iam.amazonaws.com?Action=GetCallerIdentity",
            "http://127.0.0.1:8086?Action=GetCallerIdentity",
        ] {
            assert!(check_aws_sts(url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn region_names_are_recognised() {
        for region in [
            "us-east-1",
            "ap-southeast-4",
            "us-gov-west-1",
            "eu-central-2",
        ] {
            assert!(is_aws_region(region), "{region}");
        }
        for region in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil.com",
            "us-east-1/x",
            "-1",
        ] {
            assert!(!is_aws_region(region), "{region}");
        }
    }
}
