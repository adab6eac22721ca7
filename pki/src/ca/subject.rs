//! What an end-entity certificate names, one shape per role (docs/PKI.md, "Roles and OIDs"): the
//! DNS and IP names of a TLS certificate, the merchant id of a merchant, the IIN of the issuing
//! bank. Parsed once from `pki issue`'s flags into a [`Subject`]; a subject that does not fit its
//! role (a merchant without a merchant id, a bank-signing certificate with one) cannot be built.

use std::fmt;
use std::net::IpAddr;

use mps_protocol::{IdError, Iin, MerchantId};

use crate::role::Role;

/// Most DNS plus IP SANs in one certificate.
pub const SUBJECT_ALT_NAMES_MAX: usize = 32;

/// What a certificate names, one variant per [`Role`]: the role follows from the variant, so a
/// request cannot name something its role does not carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The authorization server's TLS server certificate.
    AuthzServer {
        /// DNS and IP SANs, at least one.
        names: ServerNames,
    },
    /// The gateway's TLS server certificate, presented to merchants.
    GatewayServer {
        /// DNS and IP SANs, at least one.
        names: ServerNames,
    },
    /// The gateway's TLS client certificate towards the authorization server.
    GatewayClient {
        /// DNS and IP SANs, optional.
        names: HostNames,
    },
    /// A merchant's certificate (mTLS and detached JWS): SAN URI `urn:mps:merchant:<id>`.
    Merchant {
        /// The merchant the certificate names.
        merchant_id: MerchantId,
    },
    /// The issuing bank's signing certificate: SAN URI `urn:mps:bank:<iin>`.
    BankSigning {
        /// The bank the certificate names.
        iin: Iin,
    },
}

/// DNS and IP SANs of a TLS certificate: at most [`SUBJECT_ALT_NAMES_MAX`] in total, every DNS
/// name valid; possibly none. Names are kept exactly as given (a trailing dot stays), since they
/// go into the certificate as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNames {
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
}

/// [`HostNames`] with at least one name, as a TLS server certificate needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerNames(HostNames);

/// One of `pki issue`'s flags that only some roles take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectFlag {
    /// `--dns`.
    Dns,
    /// `--ip`.
    Ip,
    /// `--merchant-id`.
    MerchantId,
    /// `--iin`.
    Iin,
}

/// `pki issue`'s role-dependent flags as given on the command line, before they are parsed into
/// a [`Subject`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectFlags {
    /// `--dns`, repeatable.
    pub dns_names: Vec<String>,
    /// `--ip`, repeatable.
    pub ip_addresses: Vec<IpAddr>,
    /// `--merchant-id`.
    pub merchant_id: Option<String>,
    /// `--iin`.
    pub iin: Option<String>,
}

/// Why the flags do not make a subject for the role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// A flag the role does not take.
    #[error("{role} certificates take no {flag}; {flag} is only for {} certificates", flag.roles())]
    FlagNotForRole {
        /// The flag given.
        flag: SubjectFlag,
        /// The role asked for.
        role: Role,
    },
    /// A flag the role needs is missing.
    #[error("{flag} is required for {role} certificates")]
    Missing {
        /// The flag missing.
        flag: SubjectFlag,
        /// The role asked for.
        role: Role,
    },
    /// A TLS server certificate without DNS or IP names.
    #[error("the {0} role needs at least one --dns or --ip")]
    NeedsHostNames(Role),
    /// Too many DNS plus IP names.
    #[error("at most {SUBJECT_ALT_NAMES_MAX} --dns and --ip in total")]
    TooManyNames,
    /// A DNS name that is not a valid DNS name.
    #[error("--dns {0:?} is not a valid DNS name")]
    DnsName(String),
    /// A merchant id that does not parse.
    #[error(
        "--merchant-id: merchant id must be 1 to {} printable ASCII characters and not all spaces",
        MerchantId::LEN
    )]
    MerchantId(#[source] IdError),
    /// An IIN that does not parse.
    #[error("--iin: iin must be exactly 6 decimal digits")]
    Iin(#[source] IdError),
}

impl Subject {
    /// Parses `pki issue`'s flags for `role`: refuses a flag the role does not take and requires
    /// the ones it needs.
    pub fn from_flags(role: Role, flags: SubjectFlags) -> Result<Self, SubjectError> {
        let SubjectFlags { dns_names, ip_addresses, merchant_id, iin } = flags;
        let given = [
            (SubjectFlag::Dns, !dns_names.is_empty()),
            (SubjectFlag::Ip, !ip_addresses.is_empty()),
            (SubjectFlag::MerchantId, merchant_id.is_some()),
            (SubjectFlag::Iin, iin.is_some()),
        ];
        if let Some((flag, _)) = given.into_iter().find(|(flag, present)| *present && !flag.fits(role)) {
            return Err(SubjectError::FlagNotForRole { flag, role });
        }
        let missing = |flag| SubjectError::Missing { flag, role };
        Ok(match role {
            Role::AuthzServer => Subject::AuthzServer { names: server_names(role, dns_names, ip_addresses)? },
            Role::GatewayServer => Subject::GatewayServer { names: server_names(role, dns_names, ip_addresses)? },
            Role::GatewayClient => Subject::GatewayClient { names: HostNames::new(dns_names, ip_addresses)? },
            Role::Merchant => {
                let text = merchant_id.ok_or_else(|| missing(SubjectFlag::MerchantId))?;
                Subject::Merchant { merchant_id: MerchantId::new(&text).map_err(SubjectError::MerchantId)? }
            }
            Role::BankSigning => {
                let text = iin.ok_or_else(|| missing(SubjectFlag::Iin))?;
                Subject::BankSigning { iin: Iin::new(&text).map_err(SubjectError::Iin)? }
            }
        })
    }

    /// The role of a certificate naming this subject.
    pub fn role(&self) -> Role {
        match self {
            Subject::AuthzServer { .. } => Role::AuthzServer,
            Subject::GatewayServer { .. } => Role::GatewayServer,
            Subject::GatewayClient { .. } => Role::GatewayClient,
            Subject::Merchant { .. } => Role::Merchant,
            Subject::BankSigning { .. } => Role::BankSigning,
        }
    }

    /// The DNS and IP names (TLS roles).
    pub fn host_names(&self) -> Option<&HostNames> {
        match self {
            Subject::AuthzServer { names } | Subject::GatewayServer { names } => Some(names.host_names()),
            Subject::GatewayClient { names } => Some(names),
            Subject::Merchant { .. } | Subject::BankSigning { .. } => None,
        }
    }

    /// The merchant id (merchant role).
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        match self {
            Subject::Merchant { merchant_id } => Some(merchant_id),
            _ => None,
        }
    }

    /// The IIN of the issuing bank (bank-signing role).
    pub fn bank_iin(&self) -> Option<&Iin> {
        match self {
            Subject::BankSigning { iin } => Some(iin),
            _ => None,
        }
    }
}

fn server_names(role: Role, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Result<ServerNames, SubjectError> {
    ServerNames::new(HostNames::new(dns_names, ip_addresses)?).ok_or(SubjectError::NeedsHostNames(role))
}

impl HostNames {
    /// Checks the count and every DNS name.
    pub fn new(dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Result<Self, SubjectError> {
        if dns_names.len() + ip_addresses.len() > SUBJECT_ALT_NAMES_MAX {
            return Err(SubjectError::TooManyNames);
        }
        if let Some(bad) =
            dns_names.iter().find(|dns| dns.is_empty() || rustls_pki_types::DnsName::try_from(dns.as_str()).is_err())
        {
            return Err(SubjectError::DnsName(bad.clone()));
        }
        Ok(Self { dns_names, ip_addresses })
    }

    /// The DNS names, as given.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The IP addresses.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ip_addresses
    }

    /// No name at all.
    pub fn is_empty(&self) -> bool {
        self.dns_names.is_empty() && self.ip_addresses.is_empty()
    }
}

impl ServerNames {
    /// `None` when `names` holds no name.
    pub fn new(names: HostNames) -> Option<Self> {
        if names.is_empty() { None } else { Some(Self(names)) }
    }

    /// The names, at least one.
    pub fn host_names(&self) -> &HostNames {
        &self.0
    }
}

impl SubjectFlag {
    /// The flag as typed.
    pub fn name(self) -> &'static str {
        match self {
            SubjectFlag::Dns => "--dns",
            SubjectFlag::Ip => "--ip",
            SubjectFlag::MerchantId => "--merchant-id",
            SubjectFlag::Iin => "--iin",
        }
    }

    /// Whether a certificate of `role` takes the flag: the one table of which role names what.
    pub fn fits(self, role: Role) -> bool {
        match role {
            Role::AuthzServer | Role::GatewayServer | Role::GatewayClient => {
                matches!(self, SubjectFlag::Dns | SubjectFlag::Ip)
            }
            Role::Merchant => self == SubjectFlag::MerchantId,
            Role::BankSigning => self == SubjectFlag::Iin,
        }
    }

    /// The roles that take the flag, for messages ("authz-server, gateway-server, gateway-client").
    fn roles(self) -> String {
        Role::ALL.into_iter().filter(|role| self.fits(*role)).map(Role::name).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for SubjectFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> SubjectFlags {
        SubjectFlags::default()
    }

    fn localhost() -> SubjectFlags {
        SubjectFlags {
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            ..flags()
        }
    }

    fn merchant(id: &str) -> SubjectFlags {
        SubjectFlags { merchant_id: Some(id.to_owned()), ..flags() }
    }

    fn bank(iin: &str) -> SubjectFlags {
        SubjectFlags { iin: Some(iin.to_owned()), ..flags() }
    }

    #[test]
    fn each_role_builds_from_its_own_flags() {
        for (role, given) in [
            (Role::AuthzServer, localhost()),
            (Role::GatewayServer, localhost()),
            (Role::GatewayClient, flags()),
            (Role::GatewayClient, localhost()),
            (Role::Merchant, merchant("SHOP-001")),
            (Role::BankSigning, bank("123456")),
        ] {
            let subject = Subject::from_flags(role, given.clone()).unwrap();
            assert_eq!(subject.role(), role);
            assert_eq!(subject.host_names().map(HostNames::dns_names).unwrap_or(&[]), given.dns_names.as_slice());
            assert_eq!(subject.merchant_id().map(MerchantId::as_str), given.merchant_id.as_deref());
            assert_eq!(subject.bank_iin().map(Iin::as_str), given.iin.as_deref());
        }
    }

    #[test]
    fn a_flag_that_does_not_fit_the_role_is_refused_with_a_clear_error() {
        let with_iin = |given: SubjectFlags| SubjectFlags { iin: Some("123456".to_owned()), ..given };
        let with_ip = |given: SubjectFlags| SubjectFlags { ip_addresses: localhost().ip_addresses, ..given };
        let with_dns = |given: SubjectFlags| SubjectFlags { dns_names: localhost().dns_names, ..given };
        for (role, given, flag, message) in [
            (
                Role::BankSigning,
                with_iin(merchant("X")),
                SubjectFlag::MerchantId,
                "bank-signing certificates take no --merchant-id; --merchant-id is only for merchant certificates",
            ),
            (
                Role::Merchant,
                with_iin(merchant("X")),
                SubjectFlag::Iin,
                "merchant certificates take no --iin; --iin is only for bank-signing certificates",
            ),
            (
                Role::Merchant,
                with_ip(merchant("X")),
                SubjectFlag::Ip,
                "merchant certificates take no --ip; --ip is only for authz-server, gateway-server, \
                 gateway-client certificates",
            ),
            (
                Role::BankSigning,
                with_dns(bank("123456")),
                SubjectFlag::Dns,
                "bank-signing certificates take no --dns; --dns is only for authz-server, gateway-server, \
                 gateway-client certificates",
            ),
            (
                Role::GatewayClient,
                merchant("X"),
                SubjectFlag::MerchantId,
                "gateway-client certificates take no --merchant-id; --merchant-id is only for merchant certificates",
            ),
            (
                Role::AuthzServer,
                with_iin(localhost()),
                SubjectFlag::Iin,
                "authz-server certificates take no --iin; --iin is only for bank-signing certificates",
            ),
        ] {
            let error = Subject::from_flags(role, given).unwrap_err();
            assert_eq!(error, SubjectError::FlagNotForRole { flag, role });
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_flag_the_role_needs_is_required() {
        let error = Subject::from_flags(Role::Merchant, flags()).unwrap_err();
        assert_eq!(error.to_string(), "--merchant-id is required for merchant certificates");
        let error = Subject::from_flags(Role::BankSigning, flags()).unwrap_err();
        assert_eq!(error.to_string(), "--iin is required for bank-signing certificates");
        for role in [Role::AuthzServer, Role::GatewayServer] {
            let error = Subject::from_flags(role, flags()).unwrap_err();
            assert_eq!(error, SubjectError::NeedsHostNames(role));
            assert!(error.to_string().contains("needs at least one --dns or --ip"), "{error}");
        }
        let ip_only = SubjectFlags { ip_addresses: localhost().ip_addresses, ..flags() };
        assert!(Subject::from_flags(Role::GatewayServer, ip_only).is_ok());
    }

    #[test]
    fn identifiers_follow_the_protocol_rules() {
        let padded = Subject::from_flags(Role::Merchant, merchant("SHOP 7         ")).unwrap();
        assert_eq!(padded, Subject::from_flags(Role::Merchant, merchant("SHOP 7")).unwrap());
        assert_eq!(padded.merchant_id().map(MerchantId::as_str), Some("SHOP 7"));
        for bad in ["", "   ", "1234567890123456", "caf\u{e9}", "bad\u{7}"] {
            let error = Subject::from_flags(Role::Merchant, merchant(bad)).unwrap_err();
            assert!(matches!(error, SubjectError::MerchantId(_)), "{bad:?}: {error:?}");
            assert!(error.to_string().contains("merchant id must be 1 to 15"), "{error}");
        }
        for bad in ["12345", "12345a", "1234567"] {
            let error = Subject::from_flags(Role::BankSigning, bank(bad)).unwrap_err();
            assert!(matches!(error, SubjectError::Iin(_)), "{bad:?}: {error:?}");
            assert!(error.to_string().contains("6 decimal digits"), "{error}");
        }
    }

    #[test]
    fn host_names_are_checked_and_bounded() {
        let bad = SubjectFlags { dns_names: vec!["localhost".to_owned(), "not a name".to_owned()], ..flags() };
        assert_eq!(Subject::from_flags(Role::AuthzServer, bad), Err(SubjectError::DnsName("not a name".to_owned())));
        let empty = SubjectFlags { dns_names: vec![String::new()], ..flags() };
        assert_eq!(Subject::from_flags(Role::GatewayClient, empty), Err(SubjectError::DnsName(String::new())));
        let many =
            SubjectFlags { ip_addresses: vec![IpAddr::from([10, 0, 0, 1]); SUBJECT_ALT_NAMES_MAX + 1], ..flags() };
        assert_eq!(Subject::from_flags(Role::GatewayServer, many), Err(SubjectError::TooManyNames));
        let kept = HostNames::new(vec!["authz.bank.test.".to_owned()], Vec::new()).unwrap();
        assert_eq!(kept.dns_names(), ["authz.bank.test.".to_owned()]);
        assert_eq!(ServerNames::new(HostNames::default()), None);
    }
}
