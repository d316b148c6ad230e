package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// runNATS starts a JetStream nats-server on a random loopback port with the
// options mutate sets (authentication, TLS).
func runNATS(t *testing.T, mutate func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	mutate(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func startExternal(t *testing.T, cfg Config) (*App, error) {
	t.Helper()
	cfg.Listen, cfg.OpsListen = "127.0.0.1:0", "off"
	a, err := Start(cfg)
	if err == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.Shutdown(ctx)
		})
	}
	return a, err
}

func TestExternalNATSUserPasswordAndToken(t *testing.T) {
	s := runNATS(t, func(o *server.Options) { o.Username, o.Password = "gw", "pw-secret" })
	url := s.ClientURL()
	if _, err := startExternal(t, Config{NATSURL: url, NATSUser: "gw", NATSPassword: "pw-secret"}); err != nil {
		t.Fatalf("--nats-user/--nats-password: %v", err)
	}
	withUser := strings.Replace(url, "nats://", "nats://gw:pw-secret@", 1)
	if _, err := startExternal(t, Config{NATSURL: withUser}); err != nil {
		t.Fatalf("credentials in the URL: %v", err)
	}
	_, err := startExternal(t, Config{NATSURL: strings.Replace(url, "nats://", "nats://gw:wrong-pw@", 1)})
	if err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("the password is in the error: %v", err)
	}

	ts := runNATS(t, func(o *server.Options) { o.Authorization = "tok-secret" })
	if _, err := startExternal(t, Config{NATSURL: ts.ClientURL(), NATSToken: "tok-secret"}); err != nil {
		t.Fatalf("--nats-token: %v", err)
	}
	if _, err := startExternal(t, Config{NATSURL: ts.ClientURL(), NATSToken: "other"}); err == nil {
		t.Fatal("a wrong token connected")
	}
}

func TestExternalNATSNkey(t *testing.T) {
	pub, seed := newUserNkey(t)
	file := filepath.Join(t.TempDir(), "gw.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	s := runNATS(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	if _, err := startExternal(t, Config{NATSURL: s.ClientURL(), NATSNkey: file}); err != nil {
		t.Fatalf("--nats-nkey: %v", err)
	}
	if _, err := startExternal(t, Config{NATSURL: s.ClientURL()}); err == nil {
		t.Fatal("connected without the nkey")
	}
}

func TestExternalNATSMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, ca, caKey, "gateway", false)
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", certPEM(ca))
	cliCertFile, cliKeyFile := write("client.pem", certPEM(cliCert)), write("client-key.pem", keyPEM(t, cliKey))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s := runNATS(t, func(o *server.Options) {
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 5
		o.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		}
	})
	url := s.ClientURL()
	if _, err := startExternal(t, Config{NATSURL: url, NATSTLSCA: caFile, NATSTLSCert: cliCertFile, NATSTLSKey: cliKeyFile}); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	if _, err := startExternal(t, Config{NATSURL: url, NATSTLSCA: caFile}); err == nil {
		t.Fatal("connected without a client certificate")
	}
	// A CA file that is not PEM is named at start.
	bad := write("bad.pem")
	if _, err := startExternal(t, Config{NATSURL: url, NATSTLSCA: bad, NATSTLSCert: cliCertFile, NATSTLSKey: cliKeyFile}); err == nil ||
		!strings.Contains(err.Error(), "bad.pem") {
		t.Fatalf("empty CA file: %v", err)
	}
}

func TestExternalNATSOptionErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{NATSToken: "t"}, "--nats-token is for an external NATS and needs --nats-url"},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSCreds: missing}, "nats-creds: open " + missing},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSNkey: missing}, "nats-nkey:"},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSTLSCA: missing}, "nats-tls-ca: open " + missing},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSTLSCert: missing, NATSTLSKey: missing}, "nats-tls-cert: open " + missing},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSTLSKey: missing}, "go together"},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSPassword: "p"}, "--nats-password needs --nats-user"},
		{Config{NATSURL: "nats://127.0.0.1:1", NATSCreds: missing, NATSNkey: missing}, "not several"},
	} {
		_, err := externalNATSOptions(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222":                           "nats://a:4222",
		"nats://u:p@a:4222, nats://v:q@b:4222":    "nats://redacted@a:4222,nats://redacted@b:4222",
		"nats://tok@a:4222":                       "nats://redacted@a:4222",
		"nats://u:p%zz@a:4222":                    "nats://redacted@a:4222",
		"https://keys.example.com/k@v2":           "https://keys.example.com/k@v2",
		"tls://u:secret@[::1]:4222,nats://c:4222": "tls://redacted@[::1]:4222,nats://c:4222",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// fabric_build_info carries Config.Version.
func TestBuildInfoVersion(t *testing.T) {
	a, err := Start(Config{Listen: "127.0.0.1:0", OpsListen: "127.0.0.1:0", NATSListen: "off", DataDir: t.TempDir(), Version: "v9.8.7 (0123456789ab)"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	got := labelValues(scrape(t, a.OpsAddr())["fabric_build_info"], "version")
	if len(got) != 1 || !got["v9.8.7 (0123456789ab)"] {
		t.Fatalf("fabric_build_info version = %v", got)
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func certPEM(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) *pem.Block {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
}

// newUserNkey makes a user NKey: its public key ("U…") and seed ("SU…"),
// encoded as github.com/nats-io/nkeys does (base32 of prefix bytes, key
// and a little-endian CRC-16/XMODEM), without importing it.
func newUserNkey(t *testing.T) (string, []byte) {
	t.Helper()
	pubKey, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const prefixSeed, prefixUser = 18 << 3, 20 << 3
	encode := func(raw []byte) string {
		raw = binary.LittleEndian.AppendUint16(raw, crc16(raw))
		return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw)
	}
	pub := encode(append([]byte{prefixUser}, pubKey...))
	seed := encode(append([]byte{prefixSeed | prefixUser>>5, (prefixUser & 31) << 3}, priv.Seed()...))
	return pub, []byte(seed)
}

func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for i := 0; i < 8; i++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
