package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
)

// PKI is the cluster's credentials, as files in one directory: a CA, the
// API server's serving certificate, an admin client certificate (group
// system:masters) and the service-account signing key.
type PKI struct{ Dir string }

// Files of the PKI directory.
func (p PKI) CACert() string     { return filepath.Join(p.Dir, "ca.crt") }
func (p PKI) ServerCert() string { return filepath.Join(p.Dir, "apiserver.crt") }
func (p PKI) ServerKey() string  { return filepath.Join(p.Dir, "apiserver.key") }
func (p PKI) AdminCert() string  { return filepath.Join(p.Dir, "admin.crt") }
func (p PKI) AdminKey() string   { return filepath.Join(p.Dir, "admin.key") }
func (p PKI) SAKey() string      { return filepath.Join(p.Dir, "sa.key") }
func (p PKI) SAPub() string      { return filepath.Join(p.Dir, "sa.pub") }

// certValidity is long enough for any local cluster's life.
const certValidity = 5 * 365 * 24 * time.Hour

// Generate writes a new PKI: the serving certificate names the addresses
// (the API server's, in the VPC and on loopback) and the in-cluster names
// of the kubernetes Service.
func (p PKI) Generate(addrs []netip.Addr) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate the CA key: %w", err)
	}
	now := time.Now().Add(-time.Minute)
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "vpcnet-local-ca"},
		NotBefore: now, NotAfter: now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	leaf := func(cn string, orgs []string, usage x509.ExtKeyUsage, ips []netip.Addr, dns []string, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate the key of %s: %w", cn, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore: now, NotAfter: now.Add(certValidity),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: dns,
		}
		for _, a := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("create the certificate of %s: %w", cn, err)
		}
		if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", kb, 0o600)
	}
	if err := writePEM(p.CACert(), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := leaf("kube-apiserver", nil, x509.ExtKeyUsageServerAuth, addrs, dns, p.ServerCert(), p.ServerKey()); err != nil {
		return err
	}
	if err := leaf("vpcnet-admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, nil, nil, p.AdminCert(), p.AdminKey()); err != nil {
		return err
	}
	// Service-account tokens: RSA, which every client of the issuer's keys
	// understands.
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate the service-account key: %w", err)
	}
	if err := writePEM(p.SAKey(), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa), 0o600); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	return writePEM(p.SAPub(), "PUBLIC KEY", pub, 0o644)
}

// Exists says whether a PKI was generated in the directory.
func (p PKI) Exists() bool {
	for _, f := range []string{p.CACert(), p.ServerCert(), p.ServerKey(), p.AdminCert(), p.AdminKey(), p.SAKey(), p.SAPub()} {
		if _, err := os.Stat(f); err != nil {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func writePEM(path, kind string, der []byte, perm os.FileMode) error {
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), perm, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
