package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
)

// PKI is the cluster's credentials, as files in one directory: a CA (its
// key kept, so that nodes joining later get certificates), the API server's
// serving certificate, client certificates (the admin in system:masters, the
// controller manager, the scheduler, each kubelet and kube-proxy) and the
// service-account signing key.
type PKI struct{ Dir string }

// Files of the PKI directory.
func (p PKI) CACert() string     { return filepath.Join(p.Dir, "ca.crt") }
func (p PKI) CAKey() string      { return filepath.Join(p.Dir, "ca.key") }
func (p PKI) ServerCert() string { return p.Cert("apiserver") }
func (p PKI) ServerKey() string  { return p.Key("apiserver") }
func (p PKI) AdminCert() string  { return p.Cert("admin") }
func (p PKI) AdminKey() string   { return p.Key("admin") }
func (p PKI) SAKey() string      { return filepath.Join(p.Dir, "sa.key") }
func (p PKI) SAPub() string      { return filepath.Join(p.Dir, "sa.pub") }

// Cert and Key are the files of the certificate Issue wrote as name.
func (p PKI) Cert(name string) string { return filepath.Join(p.Dir, name+".crt") }
func (p PKI) Key(name string) string  { return filepath.Join(p.Dir, name+".key") }

// certValidity is long enough for any local cluster's life.
const certValidity = 5 * 365 * 24 * time.Hour

// Generate writes a new PKI: the CA, the serving certificate naming the
// addresses (the API server's, in the VPC and on loopback) and the
// in-cluster names of the kubernetes Service, the admin's and the API
// server's client certificate for kubelets, and the service-account key.
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
	if err := writeKey(p.CAKey(), caKey); err != nil {
		return err
	}
	if err := writePEM(p.CACert(), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := p.Issue("apiserver", Subject{CN: "kube-apiserver", Server: true, IPs: addrs, DNS: dns}); err != nil {
		return err
	}
	if err := p.Issue("admin", Subject{CN: "vpcnet-admin", Orgs: []string{"system:masters"}}); err != nil {
		return err
	}
	// The API server's identity towards kubelets (logs, exec).
	if err := p.Issue("apiserver-kubelet-client", Subject{CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}}); err != nil {
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

// Subject is who a certificate names.
type Subject struct {
	CN   string
	Orgs []string // groups, to the API server
	// Server: a serving certificate for IPs and DNS; otherwise a client's.
	Server bool
	IPs    []netip.Addr
	DNS    []string
}

// Issue writes a certificate signed by the CA, and its key, as name.crt
// and name.key.
func (p PKI) Issue(name string, s Subject) error { return p.IssueInto(p, name, s) }

// IssueInto is Issue writing into another directory (a node's), which
// gets the CA's certificate but not its key.
func (p PKI) IssueInto(into PKI, name string, s Subject) error {
	ca, caKey, err := p.loadCA()
	if err != nil {
		return err
	}
	if into.Dir != p.Dir {
		if err := writePEM(into.CACert(), "CERTIFICATE", ca.Raw, 0o644); err != nil {
			return err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate the key of %s: %w", s.CN, err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if s.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	now := time.Now().Add(-time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: s.CN, Organization: s.Orgs},
		NotBefore: now, NotAfter: now.Add(certValidity),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: s.DNS,
	}
	for _, a := range s.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create the certificate of %s: %w", s.CN, err)
	}
	if err := writeKey(into.Key(name), key); err != nil {
		return err
	}
	return writePEM(into.Cert(name), "CERTIFICATE", der, 0o644)
}

func (p PKI) loadCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	read := func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read the cluster CA: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("read the cluster CA: %s holds no PEM block", path)
		}
		return blk.Bytes, nil
	}
	certDER, err := read(p.CACert())
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := read(p.CAKey())
	if err != nil {
		return nil, nil, err
	}
	ca, err1 := x509.ParseCertificate(certDER)
	key, err2 := x509.ParseECPrivateKey(keyDER)
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, fmt.Errorf("parse the cluster CA: %w", err)
	}
	return ca, key, nil
}

// Exists says whether a PKI was generated in the directory.
func (p PKI) Exists() bool {
	for _, f := range []string{p.CACert(), p.CAKey(), p.ServerCert(), p.ServerKey(), p.AdminCert(), p.AdminKey(),
		p.Cert("apiserver-kubelet-client"), p.SAKey(), p.SAPub()} {
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

func writeKey(path string, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", kb, 0o600)
}

func writePEM(path, kind string, der []byte, perm os.FileMode) error {
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), perm, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
