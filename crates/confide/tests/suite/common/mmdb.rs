//! A MaxMind DB writer just big enough for tests, so they never need a downloaded GeoIP file
//! (format: <https://maxmind.github.io/MaxMind-DB/>). It writes what GeoIP2 files are made of:
//! an IPv6 search tree with 24-bit records in which IPv4 networks sit under `::/96`, a data
//! section holding each distinct record once, and the metadata map after its marker.
//!
//! ```ignore
//! let bytes = MmdbWriter::new("GeoLite2-Country")
//!     .country("192.0.2.0/24", "NO")
//!     .insert("203.0.113.0/24", Value::map([("continent", Value::map([("code", "EU".into())]))]))
//!     .build();
//! ```

use std::collections::HashMap;

use ipnet::IpNet;

/// The values our records and metadata use (a subset of the format's types).
#[derive(Clone, Debug)]
pub enum Value {
    Text(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl Value {
    pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
        Value::Map(entries.map(|(k, v)| (k.to_owned(), v)).into())
    }

    /// `{ field: { iso_code: code } }`, as GeoIP2 Country and City records carry it.
    pub fn iso_code(field: &str, code: &str) -> Value {
        Value::Map(vec![(
            field.to_owned(),
            Value::map([("iso_code", code.into())]),
        )])
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Text(text) => {
                control(out, 2, text.len());
                out.extend_from_slice(text.as_bytes());
            }
            Value::U16(n) => unsigned(out, 5, u64::from(*n)),
            Value::U32(n) => unsigned(out, 6, u64::from(*n)),
            Value::U64(n) => unsigned(out, 9, *n),
            Value::Map(entries) => {
                control(out, 7, entries.len());
                for (key, value) in entries {
                    Value::Text(key.clone()).encode(out);
                    value.encode(out);
                }
            }
            Value::Array(items) => {
                control(out, 11, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// The control byte(s): type in the top three bits (types above 7 as 0 plus an extension byte
/// holding `type - 7`), then the payload size, growing into up to three more bytes.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, Vec::new()),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | bits);
    } else {
        out.push(bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

/// Unsigned integers are big-endian without leading zero bytes; the size says how many.
fn unsigned(out: &mut Vec<u8>, kind: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Record {
    Empty,
    Node(usize),
    /// Offset into the data section.
    Data(usize),
}

/// Networks and their records, written as one MaxMind DB file.
pub struct MmdbWriter {
    database_type: String,
    networks: Vec<(IpNet, Value)>,
}

impl MmdbWriter {
    pub fn new(database_type: &str) -> MmdbWriter {
        MmdbWriter {
            database_type: database_type.to_owned(),
            networks: Vec::new(),
        }
    }

    /// Files `record` under `network` (`192.0.2.0/24`, `2001:db8::/32`); networks must not overlap.
    pub fn insert(mut self, network: &str, record: Value) -> MmdbWriter {
        let network = network.parse().expect("a CIDR network");
        self.networks.push((network, record));
        self
    }

    /// A network located in `code`, as a GeoLite2-Country record says it.
    pub fn country(self, network: &str, code: &str) -> MmdbWriter {
        self.insert(network, Value::iso_code("country", code))
    }

    pub fn build(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let mut offsets: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
        for (network, value) in &self.networks {
            let mut encoded = Vec::new();
            value.encode(&mut encoded);
            let offset = *offsets.entry(encoded.clone()).or_insert_with(|| {
                data.extend_from_slice(&encoded);
                data.len() - encoded.len()
            });
            let (key, prefix) = match network {
                IpNet::V4(v4) => (
                    u128::from(u32::from(v4.network())),
                    96 + usize::from(v4.prefix_len()),
                ),
                IpNet::V6(v6) => (u128::from(v6.network()), usize::from(v6.prefix_len())),
            };
            assert!(prefix > 0, "a network smaller than the whole space");
            let mut node = 0;
            for depth in 0..prefix {
                let bit = ((key >> (127 - depth)) & 1) as usize;
                if depth == prefix - 1 {
                    assert_eq!(nodes[node][bit], Record::Empty, "{network} overlaps");
                    nodes[node][bit] = Record::Data(offset);
                    break;
                }
                node = match nodes[node][bit] {
                    Record::Node(next) => next,
                    Record::Empty => {
                        nodes.push([Record::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next);
                        next
                    }
                    Record::Data(_) => panic!("{network} overlaps"),
                };
            }
        }

        let node_count = nodes.len();
        let mut file = Vec::new();
        for node in &nodes {
            for record in node {
                // Data pointers count from the end of the tree, past the 16-byte separator.
                let value = match *record {
                    Record::Empty => node_count,
                    Record::Node(next) => next,
                    Record::Data(offset) => node_count + 16 + offset,
                };
                assert!(value < 1 << 24, "the tree outgrew 24-bit records");
                file.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
            }
        }
        file.extend_from_slice(&[0; 16]);
        file.extend_from_slice(&data);
        file.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = Value::map([
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(24)),
            ("ip_version", Value::U16(6)),
            ("database_type", self.database_type.as_str().into()),
            ("languages", Value::Array(vec!["en".into()])),
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(1_700_000_000)),
            (
                "description",
                Value::map([("en", "Confide test countries".into())]),
            ),
        ]);
        metadata.encode(&mut file);
        file
    }
}
