package access

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// WebConfig is --web.config.file, in the format of Prometheus's exporter-toolkit (the file
// Prometheus and Alertmanager take): tls_server_config, http_server_config and
// basic_auth_users with bcrypt hashes.
type WebConfig struct {
	// Path is the file it was read from; empty: no file, plain HTTP, no users.
	Path string
	// Users maps basic-auth user names to bcrypt hashes.
	Users map[string]string
	// Headers are set on every response (http_server_config.headers).
	Headers map[string]string
	// HTTP2 is http_server_config.http2.
	HTTP2 bool
	// TLS is nil for plain HTTP. Certificates are read again for each new connection, so a
	// renewed certificate is served without a restart, as Prometheus does.
	TLS *tls.Config
}

// LoadWebConfig reads and validates the web configuration file; an empty path is plain HTTP
// without users.
func LoadWebConfig(path string) (*WebConfig, error) {
	if path == "" {
		return &WebConfig{}, nil
	}
	// The toolkit's own validation: YAML, bcrypt hashes, headers, certificates and keys.
	if err := web.Validate(path); err != nil {
		return nil, fmt.Errorf("web config %s: %w", path, err)
	}
	c, err := parseWebConfig(path)
	if err != nil {
		return nil, err
	}
	wc := &WebConfig{Path: path, Users: map[string]string{}, Headers: c.HTTPConfig.Header, HTTP2: c.HTTPConfig.HTTP2}
	for u, h := range c.Users {
		wc.Users[u] = string(h)
	}
	if !hasTLS(&c.TLSConfig) {
		return wc, nil
	}
	if wc.TLS, err = web.ConfigToTLSConfig(&c.TLSConfig); err != nil {
		return nil, fmt.Errorf("web config %s: tls_server_config: %w", path, err)
	}
	protos := []string{"http/1.1"}
	if wc.HTTP2 {
		protos = []string{"h2", "http/1.1"}
	}
	wc.TLS.NextProtos = protos
	wc.TLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := parseWebConfig(path)
		if err != nil {
			return nil, err
		}
		cfg, err := web.ConfigToTLSConfig(&c.TLSConfig)
		if err != nil {
			return nil, err
		}
		cfg.NextProtos = protos
		return cfg, nil
	}
	return wc, nil
}

// parseWebConfig decodes the file with the toolkit's defaults (TLS 1.2 to 1.3, HTTP/2 on).
func parseWebConfig(path string) (*web.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("web config: %w", err)
	}
	c := &web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, PreferServerCipherSuites: true},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("web config %s: %w", path, err)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	return c, nil
}

func hasTLS(c *web.TLSConfig) bool {
	return c.TLSCertPath != "" || c.TLSCert != "" || c.TLSKeyPath != "" || c.TLSKey != "" ||
		c.ClientCAs != "" || c.ClientCAsText != "" || c.ClientAuth != ""
}
