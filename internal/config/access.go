package config

import (
	"errors"
	"fmt"
	"slices"
)

// Role names an identity may be given; internal/access defines what each allows and takes
// the names from here.
const (
	RoleRead    = "read"
	RoleOperate = "operate"
	RoleAdmin   = "admin"
)

// AccessConfig says who may do what. Users authenticate with basic auth from
// --web.config.file (bcrypt hashes, exactly as Prometheus takes it), a client certificate whose
// subject common name is the identity's name, or a bearer token read from a file. Member
// clusters keep authenticating with their remote_write credentials, which only ingest.
//
// Without any identity, reads stay open as Prometheus's do and every state-changing endpoint
// answers 403.
type AccessConfig struct {
	Identities []*IdentityConfig `yaml:"identities,omitempty"`
	// AnonymousRoles are given to requests without credentials once identities are configured
	// (default none: every request must authenticate). Only "read" may be given.
	AnonymousRoles []string `yaml:"anonymous_roles,omitempty"`
}

// IdentityConfig is one user or service of fleetwatch's API.
type IdentityConfig struct {
	// Name is the basic-auth user name (--web.config.file) or the client certificate's
	// subject common name that authenticates as this identity.
	Name  string   `yaml:"name"`
	Roles []string `yaml:"roles"`
	// BearerTokenFile holds a token that authenticates as this identity (relative to the
	// config file).
	BearerTokenFile string `yaml:"bearer_token_file,omitempty"`
	// Clusters and ClusterSelector limit the identity to some clusters (team scoping): the
	// clusters named, plus those whose labels match every selector entry. Neither set: every
	// cluster.
	Clusters        []string          `yaml:"clusters,omitempty"`
	ClusterSelector map[string]string `yaml:"cluster_selector,omitempty"`

	// Filled by Load from BearerTokenFile; never read from YAML.
	BearerToken string `yaml:"-"`
}

// Scoped says whether the identity is limited to some clusters.
func (i *IdentityConfig) Scoped() bool { return i.Clusters != nil || i.ClusterSelector != nil }

// UnmarshalYAML validates one identity.
func (i *IdentityConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain IdentityConfig
	if err := unmarshal((*plain)(i)); err != nil {
		if i.Name != "" {
			return fmt.Errorf("access.identities: %q: %w", i.Name, err)
		}
		return fmt.Errorf("access.identities: %w", err)
	}
	if i.Name == "" {
		return errors.New("access.identities: name: must not be empty")
	}
	if len(i.Roles) == 0 {
		return fmt.Errorf("access.identities: %q: roles: at least one of read, operate, admin", i.Name)
	}
	for _, r := range i.Roles {
		if !slices.Contains([]string{RoleRead, RoleOperate, RoleAdmin}, r) {
			return fmt.Errorf("access.identities: %q: roles: %q is not one of read, operate, admin", i.Name, r)
		}
	}
	if i.Clusters != nil && len(i.Clusters) == 0 && i.ClusterSelector == nil {
		return fmt.Errorf("access.identities: %q: clusters: an empty list would show nothing; omit it to allow every cluster", i.Name)
	}
	if i.ClusterSelector != nil && len(i.ClusterSelector) == 0 {
		return fmt.Errorf("access.identities: %q: cluster_selector: must name at least one label", i.Name)
	}
	return nil
}

// validate checks the section against the clusters, once they are loaded, and reads the
// token files.
func (a *AccessConfig) validate(clusters []*ClusterConfig, dir string) error {
	for _, r := range a.AnonymousRoles {
		if r != RoleRead {
			return fmt.Errorf("access.anonymous_roles: %q: only %q may be given to requests without credentials", r, RoleRead)
		}
	}
	names := map[string]bool{}
	tokens := map[string]string{}
	for k, c := range clusters {
		if rw := c.RemoteWrite; rw != nil && rw.BearerToken != "" {
			tokens[rw.BearerToken] = "cluster " + clusters[k].Name
		}
	}
	for n, id := range a.Identities {
		if id == nil {
			return fmt.Errorf("access.identities[%d]: empty entry", n)
		}
		if names[id.Name] {
			return fmt.Errorf("access.identities: %q: name: defined more than once", id.Name)
		}
		names[id.Name] = true
		for _, c := range id.Clusters {
			if !slices.ContainsFunc(clusters, func(cc *ClusterConfig) bool { return cc.Name == c }) {
				return fmt.Errorf("access.identities: %q: clusters: %q is not a configured cluster", id.Name, c)
			}
		}
		if id.BearerTokenFile != "" {
			id.BearerTokenFile = resolve(dir, id.BearerTokenFile)
			tok, err := readSecret(id.BearerTokenFile)
			if err != nil {
				return fmt.Errorf("access.identities: %q: bearer_token_file: %w", id.Name, err)
			}
			if other, ok := tokens[tok]; ok {
				return fmt.Errorf("access.identities: %q: bearer_token_file: the same token as %s; each identity needs its own", id.Name, other)
			}
			tokens[tok] = "identity " + id.Name
			id.BearerToken = tok
		}
	}
	return nil
}

// ScopeOf returns the clusters the identity is limited to (nil: every cluster): those it
// names plus those whose labels match its selector.
func (i *IdentityConfig) ScopeOf(clusters []*ClusterConfig) []string {
	if !i.Scoped() {
		return nil
	}
	out := append([]string{}, i.Clusters...)
	if i.ClusterSelector != nil {
		for _, c := range clusters {
			match := true
			for k, v := range i.ClusterSelector {
				if c.Labels[k] != v {
					match = false
					break
				}
			}
			if match && !slices.Contains(out, c.Name) {
				out = append(out, c.Name)
			}
		}
	}
	return out
}
