package pkicheck

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParseCert returns the first certificate of PEM data. Other blocks are
// skipped: the kubelet keeps its certificate and key in one file.
func ParseCert(data []byte) (*x509.Certificate, error) {
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
	return nil, errors.New("no PEM certificate")
}

// ParseKey returns the first private key of PEM data, in PKCS#1, SEC 1 (EC)
// or PKCS#8 form. Other blocks are skipped: openssl writes EC PARAMETERS
// before an EC key, and the kubelet's file starts with its certificate.
func ParseKey(data []byte) (crypto.Signer, error) {
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		var k any
		var err error
		switch {
		case b.Type == "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case b.Type == "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: a %T cannot sign", b.Type, k)
		}
		return s, nil
	}
	return nil, errors.New("no PEM private key")
}

// parsePublicKey returns the first public key of PEM data: kubeadm writes
// sa.pub as PKIX, a hand-made one may be PKCS#1.
func parsePublicKey(data []byte) (crypto.PublicKey, error) {
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		switch b.Type {
		case "PUBLIC KEY":
			return x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			return k, nil
		}
	}
	return nil, errors.New("no PEM public key")
}

// SamePublicKey reports whether two public keys are one. Every key type
// x509 returns has an Equal method; anything else matches nothing.
func SamePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
