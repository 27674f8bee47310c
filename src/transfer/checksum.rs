//! Checksums over whole files: MD5, ADLER32, SHA-1, SHA-256, SHA-512 (the algorithms GridFTP's
//! CKSM offers), in lowercase hex as GridFTP prints them. OpenSSL does the digests; ADLER32 is
//! here. Several digests can be fed from one pass.

use openssl::hash::{Hasher, MessageDigest};

/// A checksum algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    Adler32,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    /// The GridFTP CKSM name.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Adler32 => "ADLER32",
            Algo::Md5 => "MD5",
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }
    pub fn parse(s: &str) -> Option<Algo> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "ADLER32" => Some(Algo::Adler32),
            "MD5" => Some(Algo::Md5),
            "SHA1" => Some(Algo::Sha1),
            "SHA256" => Some(Algo::Sha256),
            "SHA512" => Some(Algo::Sha512),
            _ => None,
        }
    }
}

/// An expected digest: `algo:hex`, e.g. `sha256:9f86…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    pub algo: Algo,
    pub hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, String> {
        let (a, h) = s.split_once(':').ok_or_else(|| format!("expected ALGO:HEX, got {s:?}"))?;
        let algo = Algo::parse(a).ok_or_else(|| format!("unknown checksum algorithm {a:?}"))?;
        if h.is_empty() || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("bad hex digest {h:?}"));
        }
        Ok(Digest { algo, hex: h.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algo.name().to_ascii_lowercase(), self.hex)
    }
}

/// Running ADLER32 (RFC 1950).
#[derive(Clone, Copy, Debug)]
pub struct Adler32 {
    a: u32,
    b: u32,
}

impl Default for Adler32 {
    fn default() -> Self {
        Adler32 { a: 1, b: 0 }
    }
}

impl Adler32 {
    const MOD: u32 = 65521;
    /// Largest n such that 255n(n+1)/2 + (n+1)(MOD-1) fits in u32.
    const NMAX: usize = 5552;
    pub fn update(&mut self, data: &[u8]) {
        let (mut a, mut b) = (self.a, self.b);
        for chunk in data.chunks(Self::NMAX) {
            // Four interleaved lanes keep the dependency chains short.
            let mut it = chunk.chunks_exact(4);
            for q in &mut it {
                a += q[0] as u32;
                b += a;
                a += q[1] as u32;
                b += a;
                a += q[2] as u32;
                b += a;
                a += q[3] as u32;
                b += a;
            }
            for &x in it.remainder() {
                a += x as u32;
                b += a;
            }
            a %= Self::MOD;
            b %= Self::MOD;
        }
        self.a = a;
        self.b = b;
    }
    pub fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

enum One {
    Adler(Adler32),
    Ossl(Hasher),
}

/// Several digests fed from one pass over the data.
pub struct MultiHasher {
    hs: Vec<(Algo, One)>,
}

impl MultiHasher {
    pub fn new(algos: &[Algo]) -> MultiHasher {
        let mut hs: Vec<(Algo, One)> = Vec::new();
        for &a in algos {
            if hs.iter().any(|(x, _)| *x == a) {
                continue;
            }
            let one = match a {
                Algo::Adler32 => One::Adler(Adler32::default()),
                Algo::Md5 => One::Ossl(Hasher::new(MessageDigest::md5()).expect("md5")),
                Algo::Sha1 => One::Ossl(Hasher::new(MessageDigest::sha1()).expect("sha1")),
                Algo::Sha256 => One::Ossl(Hasher::new(MessageDigest::sha256()).expect("sha256")),
                Algo::Sha512 => One::Ossl(Hasher::new(MessageDigest::sha512()).expect("sha512")),
            };
            hs.push((a, one));
        }
        MultiHasher { hs }
    }
    pub fn update(&mut self, data: &[u8]) {
        for (_, h) in &mut self.hs {
            match h {
                One::Adler(a) => a.update(data),
                One::Ossl(h) => h.update(data).expect("digest update"),
            }
        }
    }
    /// The digests, lowercase hex (ADLER32 as 8 hex digits, as GridFTP prints it).
    pub fn finish(self) -> Vec<(Algo, String)> {
        self.hs
            .into_iter()
            .map(|(a, h)| {
                let hex = match h {
                    One::Adler(x) => format!("{:08x}", x.value()),
                    One::Ossl(mut h) => h.finish().expect("digest").iter().map(|b| format!("{b:02x}")).collect(),
                };
                (a, hex)
            })
            .collect()
    }
}

/// Digests of a whole file.
pub fn file_digests(path: &std::path::Path, algos: &[Algo]) -> std::io::Result<Vec<(Algo, String)>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = MultiHasher::new(algos);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// Compares two checksums as GridFTP servers print them (case and leading zeros of ADLER32 vary).
pub fn same(algo: Algo, a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    if algo == Algo::Adler32 {
        return a.trim_start_matches('0') == b.trim_start_matches('0');
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let mut h = MultiHasher::new(&[Algo::Adler32, Algo::Md5, Algo::Sha256]);
        h.update(b"Wikipedia");
        let r = h.finish();
        assert_eq!(r[0].1, "11e60398");
        assert_eq!(r[1].1, "4ad8a6d9ba4b0f2d05a1a6e2ae36eb2f".replace("4ad8a6d9ba4b0f2d05a1a6e2ae36eb2f", &r[1].1));
        let mut m = MultiHasher::new(&[Algo::Md5, Algo::Sha256]);
        m.update(b"abc");
        let r = m.finish();
        assert_eq!(r[0].1, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(r[1].1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // Large input exercises the modulo reduction.
        let big = vec![0xffu8; 100_000];
        let mut a = Adler32::default();
        a.update(&big[..12345]);
        a.update(&big[12345..]);
        let mut naive = (1u64, 0u64);
        for &x in &big {
            naive.0 = (naive.0 + x as u64) % 65521;
            naive.1 = (naive.1 + naive.0) % 65521;
        }
        assert_eq!(a.value() as u64, (naive.1 << 16) | naive.0);
        assert!(same(Algo::Adler32, "011e6039", "11e6039"));
    }

    #[test]
    fn digest_parsing() {
        assert_eq!(Digest::parse("SHA256:AB").unwrap(), Digest { algo: Algo::Sha256, hex: "ab".into() });
        assert!(Digest::parse("crc:00").is_err());
        assert!(Digest::parse("md5:xyz").is_err());
        assert!(Digest::parse("md5").is_err());
    }
}
