package config

import (
	"fmt"

	"github.com/prometheus/common/config"
)

// AlertmanagerConfig is an Alertmanager fleetwatch posts alerts or incidents to: its base URL
// and Prometheus's HTTP client settings (tls_config, authorization, basic_auth, oauth2,
// proxy_url, ...), as Prometheus's alertmanagers section takes them. A plain string is a URL
// with default settings, so `alertmanagers: [http://am:9093]` keeps working.
type AlertmanagerConfig struct {
	URL              string                  `yaml:"url"`
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// UnmarshalYAML takes a URL string or a mapping, and validates.
func (a *AlertmanagerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*a = AlertmanagerConfig{HTTPClientConfig: config.DefaultHTTPClientConfig}
	var s string
	if err := unmarshal(&s); err == nil {
		a.URL = s
	} else {
		type plain AlertmanagerConfig
		if err := unmarshal((*plain)(a)); err != nil {
			return err
		}
	}
	// The URL is checked by the section, which can say which entry it is.
	if err := a.HTTPClientConfig.Validate(); err != nil {
		return fmt.Errorf("alertmanager %s: http client: %w", a.URL, err)
	}
	return nil
}

// URLs returns the Alertmanagers' base URLs.
func URLs(ams []*AlertmanagerConfig) []string {
	out := make([]string, len(ams))
	for i, a := range ams {
		out[i] = a.URL
	}
	return out
}
