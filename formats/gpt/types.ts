/** Names of common GPT partition type GUIDs, as fdisk shows them. */

/** Known type GUIDs and their names (upper-case GUID text). */
export const GPT_TYPE_NAMES: ReadonlyMap<string, string> = new Map([
  ['C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'EFI System'],
  ['21686148-6449-6E6F-744E-656564454649', 'BIOS boot'],
  ['0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'Linux filesystem'],
  ['E6D6D379-F507-44C2-A23C-238F2A3DF928', 'Linux LVM'],
  ['0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', 'Linux swap'],
  ['A19D880F-05FC-4D3B-A006-743F0F84911E', 'Linux RAID'],
  ['933AC7E1-2EB4-4F13-B844-0E14E2AEF915', 'Linux home'],
  ['4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709', 'Linux root (x86-64)'],
  ['BC13C2FF-59E6-4262-A352-B275FD6F7172', 'Linux extended boot'],
  ['CA7D7CCB-63ED-4C53-861C-1742536059CC', 'Linux LUKS'],
  ['EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', 'Microsoft basic data'],
  ['E3C9E316-0B5C-4DB8-817D-F92DF00215AE', 'Microsoft reserved'],
  ['DE94BBA4-06D1-4D40-A16A-BFD50179D6AC', 'Windows recovery environment'],
  ['48465300-0000-11AA-AA11-00306543ECAC', 'Apple HFS/HFS+'],
  ['7C3457EF-0000-11AA-AA11-00306543ECAC', 'Apple APFS'],
  ['516E7CB6-6ECF-11D6-8FF8-00022D09712B', 'FreeBSD data'],
]);

/** Short aliases sfdisk accepts for GPT types in scripts. */
export const GPT_TYPE_ALIASES: ReadonlyMap<string, string> = new Map([
  ['L', '0FC63DAF-8483-4772-8E79-3D69D8477DE4'],
  ['S', '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F'],
  ['U', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'],
  ['R', 'A19D880F-05FC-4D3B-A006-743F0F84911E'],
  ['V', 'E6D6D379-F507-44C2-A23C-238F2A3DF928'],
  ['H', '933AC7E1-2EB4-4F13-B844-0E14E2AEF915'],
]);
