//! [`AllowedHost`]: one entry of a component's `allowed_outbound_hosts`.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An origin a component may send outbound HTTP requests to, written
/// `scheme://host[:port]` in the manifest (`"https://api.example.com"`,
/// `"http://127.0.0.1:8080"`, `"http://[::1]:3000"`).
///
/// Only `http` and `https` are accepted. Without a port, the scheme's default port (80 or 443)
/// is meant, and only that one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedHost {
    /// `http` or `https`.
    pub scheme: String,
    /// The host name in lowercase, or an IP address (IPv6 in brackets, as in a URL).
    pub host: String,
    /// The port, the scheme's default if none was written.
    pub port: u16,
}

impl AllowedHost {
    /// True if a request to `scheme://host[:port]` goes to this origin. `port` is `None` when
    /// the request names no port (the scheme's default is then meant).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Some(port) = port.or_else(|| default_port(scheme)) else {
            return false;
        };
        self.scheme.eq_ignore_ascii_case(scheme)
            && self.host.eq_ignore_ascii_case(host)
            && self.port == port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not an origin like \"https://api.example.com\""))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = default_port(&scheme)
            .ok_or_else(|| format!("scheme `{scheme}` is not supported; use http or https"))?;
        // A trailing slash is harmless; a path, query, fragment or user name is not an origin.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(c) = authority
            .chars()
            .find(|c| matches!(c, '/' | '?' | '#' | '@'))
        {
            return Err(format!(
                "`{text}` has a `{c}`: give an origin (scheme://host[:port]) without path, \
                 query or user"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("`{text}` is not an origin like \"https://api.example.com\""))?;
        check_host(host).map_err(|reason| format!("`{text}` has an invalid host: {reason}"))?;
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{text}` has an invalid port: use 1 to 65535"))?,
        };
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Splits `host[:port]`, where the host may be an IPv6 address in brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, rest) = authority.split_at(end);
        match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => Some((host, Some(port))),
            None => Some((authority, None)),
        }
    }
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if let Some(address) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return address
            .parse::<Ipv6Addr>()
            .map(drop)
            .map_err(|_| "not an IPv6 address");
    }
    if host.is_empty() {
        return Err("it is empty");
    }
    let valid_labels = host.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if valid_labels {
        Ok(())
    } else {
        Err("use letters, digits, `-` and `.` (wildcards are not supported)")
    }
}

impl fmt::Display for AllowedHost {
    /// Writes the origin back, leaving out the scheme's default port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if Some(self.port) != default_port(&self.scheme) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> AllowedHost {
        text.parse().unwrap()
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let api = host("https://API.example.com");
        assert_eq!(
            api,
            AllowedHost {
                scheme: "https".into(),
                host: "api.example.com".into(),
                port: 443
            }
        );
        assert_eq!(api.to_string(), "https://api.example.com");
        assert_eq!(host("http://127.0.0.1:8080").port, 8080);
        assert_eq!(
            host("http://127.0.0.1:8080/").to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(host("http://[::1]:3000").host, "[::1]");
        assert_eq!(host("http://[::1]").port, 80);
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/v1",
            "https://user@example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://example.com:",
            "https://*.example.com",
            "https://exa mple.com",
            "http://[::1",
            "http://[nope]",
            "http://[::1]x",
        ] {
            assert!(
                bad.parse::<AllowedHost>().is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn allows_matches_scheme_host_and_port() {
        let api = host("https://api.example.com");
        assert!(api.allows("https", "api.example.com", None));
        assert!(api.allows("HTTPS", "Api.Example.com", Some(443)));
        assert!(!api.allows("http", "api.example.com", None));
        assert!(!api.allows("https", "api.example.com", Some(8443)));
        assert!(!api.allows("https", "example.com", None));
        assert!(!api.allows("gopher", "api.example.com", None));
    }
}
