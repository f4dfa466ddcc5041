package vpc

import (
	"strings"
)

// maxTagsPerResource is EC2's limit of tags on one resource.
const maxTagsPerResource = 50

// TagKey names a tag to delete, optionally only when it has Value.
type TagKey struct {
	Key   string
	Value *string
}

// CreateTags adds or overwrites tags on resources of any kind the local VPC
// holds (network interfaces, instances, security groups, subnets, VPCs).
func (m *Model) CreateTags(resourceIDs []string, tags Tags) error {
	if len(resourceIDs) == 0 {
		return errorf(CodeMissingParameter, "The request must contain the parameter resourceIdSet")
	}
	if err := checkTags(tags); err != nil {
		return err
	}
	return m.update(func(st *State) error {
		for _, id := range resourceIDs {
			t, err := tagsOf(st, id)
			if err != nil {
				return err
			}
			if *t == nil {
				*t = Tags{}
			}
			for k, v := range tags {
				(*t)[k] = v
			}
			if len(*t) > maxTagsPerResource {
				return errorf(CodeTagLimitExceeded, "The maximum number of tags per resource (%d) has been exceeded for %s", maxTagsPerResource, id)
			}
		}
		return nil
	})
}

// DeleteTags removes tags from resources; an empty key list removes all
// tags, and a key with a value removes the tag only if the value matches.
func (m *Model) DeleteTags(resourceIDs []string, keys []TagKey) error {
	if len(resourceIDs) == 0 {
		return errorf(CodeMissingParameter, "The request must contain the parameter resourceIdSet")
	}
	return m.update(func(st *State) error {
		for _, id := range resourceIDs {
			t, err := tagsOf(st, id)
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				*t = nil
				continue
			}
			for _, k := range keys {
				if v, ok := (*t)[k.Key]; ok && (k.Value == nil || *k.Value == v) {
					delete(*t, k.Key)
				}
			}
		}
		return nil
	})
}

// tagsOf finds a resource by the prefix of its ID and returns its tags.
func tagsOf(st *State, id string) (*Tags, error) {
	switch {
	case hasPrefix(id, "eni"):
		if n, ok := st.NetworkInterfaces[id]; ok {
			return &n.Tags, nil
		}
		return nil, eniNotFound(id)
	case hasPrefix(id, "i"):
		if i, ok := st.Instances[id]; ok {
			return &i.Tags, nil
		}
		return nil, instanceNotFound(id)
	case hasPrefix(id, "sg"):
		if g, ok := st.SecurityGroups[id]; ok {
			return &g.Tags, nil
		}
		return nil, groupNotFound(id)
	case hasPrefix(id, "subnet"):
		if s, ok := st.Subnets[id]; ok {
			return &s.Tags, nil
		}
		return nil, subnetNotFound(id)
	case hasPrefix(id, "vpc"):
		if v, ok := st.VPCs[id]; ok {
			return &v.Tags, nil
		}
		return nil, vpcNotFound(id)
	}
	return nil, errorf(CodeInvalidID, "The ID '%s' is not valid", id)
}

// checkTags applies EC2's rules on keys and values.
func checkTags(tags Tags) error {
	if len(tags) > maxTagsPerResource {
		return errorf(CodeTagLimitExceeded, "The maximum number of tags per resource (%d) has been exceeded", maxTagsPerResource)
	}
	for k, v := range tags {
		switch {
		case k == "":
			return invalidValue("Tag key must not be empty")
		case len(k) > 128:
			return invalidValue("Tag key exceeds the maximum length of 128 characters")
		case len(v) > 256:
			return invalidValue("Tag value exceeds the maximum length of 256 characters")
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return invalidValue("Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	return nil
}
