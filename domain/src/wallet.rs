//! Wallet identity as the domain sees it: which chain, which address. Addresses here are already
//! canonical (EIP-55 for Ethereum, base58check for Tron): the application layer parses and
//! checks them (and the signatures that prove ownership) before they reach an aggregate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Ethereum,
    Tron,
}

impl Network {
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Ethereum => "ethereum",
            Network::Tron => "tron",
        }
    }

    /// The account word of a sign-in message ("…sign in with your Ethereum account").
    pub fn display_name(&self) -> &'static str {
        match self {
            Network::Ethereum => "Ethereum",
            Network::Tron => "Tron",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network must be 'ethereum' or 'tron', got '{0}'")]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ethereum" | "eth" => Ok(Network::Ethereum),
            "tron" | "trx" => Ok(Network::Tron),
            _ => Err(UnknownNetwork(s.to_string())),
        }
    }
}

/// A wallet: a canonical address on one network. Its text form `network:address` is the key
/// of the admin whitelist and of the one-account-per-wallet claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Wallet {
    pub network: Network,
    pub address: String,
}

impl Wallet {
    pub fn key(&self) -> String {
        format!("{}:{}", self.network, self.address)
    }
}

impl fmt::Display for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.network, self.address)
    }
}
