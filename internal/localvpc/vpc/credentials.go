package vpc

import (
	"errors"
	"fmt"
	"time"
)

// ErrNoRole is returned for credentials of an instance launched without an
// IAM role.
var ErrNoRole = errors.New("instance has no IAM role")

func newState(region string, now time.Time) (State, error) {
	st := State{Region: region, AccountID: randomAccountID(), Seed: randomHex(4)}
	st.ensureMaps()
	root := &AccessKey{
		AccessKeyID:     accessKeyID("AKIA"),
		SecretAccessKey: secretAccessKey(),
		Principal:       fmt.Sprintf("arn:aws:iam::%s:root", st.AccountID),
		Issued:          now,
	}
	st.AccessKeys[root.AccessKeyID] = root
	st.RootAccessKeyID = root.AccessKeyID
	return st, nil
}

// RootCredentials returns the operator's long-term key.
func (m *Model) RootCredentials() AccessKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *m.st.AccessKeys[m.st.RootAccessKeyID]
}

// ResolvedKey is what signature verification needs to know of an access
// key.
type ResolvedKey struct {
	SecretAccessKey string
	SessionToken    string
	Principal       string
	Expired         bool
}

// ResolveAccessKey looks up a key the local VPC issued.
func (m *Model) ResolveAccessKey(accessKeyID string) (ResolvedKey, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.st.AccessKeys[accessKeyID]
	if !ok {
		return ResolvedKey{}, false
	}
	return ResolvedKey{
		SecretAccessKey: k.SecretAccessKey,
		SessionToken:    k.SessionToken,
		Principal:       k.Principal,
		Expired:         k.Expired(m.now()),
	}, true
}

// InstanceCredentials returns the current temporary credentials of an
// instance's role, issuing new ones when there are none or the newest
// expire within the rotation margin. Keys issued before stay valid until
// their own expiry, as on AWS, so a client holding them is not cut off.
func (m *Model) InstanceCredentials(instanceID string) (AccessKey, error) {
	now := m.now()
	var out AccessKey
	fresh := false
	err := m.read(func(st *State) error {
		k, err := currentRoleKey(st, instanceID)
		if err != nil {
			return err
		}
		if k != nil && k.Expiration.Sub(now) > m.rotateBefore {
			out, fresh = *k, true
		}
		return nil
	})
	if err != nil || fresh {
		return out, err
	}
	err = m.update(func(st *State) error {
		inst := st.Instances[instanceID]
		if inst == nil {
			return instanceNotFound(instanceID)
		}
		if inst.RoleName == "" {
			return ErrNoRole
		}
		// Another caller may have rotated the key since the check above.
		if k, _ := currentRoleKey(st, instanceID); k != nil && k.Expiration.Sub(now) > m.rotateBefore {
			out = *k
			return nil
		}
		pruneExpiredKeys(st, now)
		out = issueRoleKey(st, inst, now, m.credentialLifetime)
		return nil
	})
	return out, err
}

// currentRoleKey returns the newest key of an instance's role, or nil.
func currentRoleKey(st *State, instanceID string) (*AccessKey, error) {
	inst, ok := st.Instances[instanceID]
	if !ok {
		return nil, instanceNotFound(instanceID)
	}
	if inst.RoleName == "" {
		return nil, ErrNoRole
	}
	var newest *AccessKey
	for _, k := range st.AccessKeys {
		if k.InstanceID == instanceID && (newest == nil || k.Issued.After(newest.Issued)) {
			newest = k
		}
	}
	return newest, nil
}

func issueRoleKey(st *State, inst *Instance, now time.Time, lifetime time.Duration) AccessKey {
	k := &AccessKey{
		AccessKeyID:     accessKeyID("ASIA"),
		SecretAccessKey: secretAccessKey(),
		SessionToken:    sessionToken(),
		Principal:       fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", st.AccountID, inst.RoleName, inst.ID),
		InstanceID:      inst.ID,
		RoleName:        inst.RoleName,
		Issued:          now,
		Expiration:      now.Add(lifetime).Truncate(time.Second),
	}
	st.AccessKeys[k.AccessKeyID] = k
	return *k
}

// pruneExpiredKeys forgets temporary keys that expired over an hour ago;
// until then a request signed with one gets an "expired" answer rather
// than "unknown key".
func pruneExpiredKeys(st *State, now time.Time) {
	for id, k := range st.AccessKeys {
		if !k.Expiration.IsZero() && now.Sub(k.Expiration) > time.Hour {
			delete(st.AccessKeys, id)
		}
	}
}
