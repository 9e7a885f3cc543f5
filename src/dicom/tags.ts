/** Tags the gateway reads by name. Hex strings as DICOM JSON keys them (PS3.18 F.2). */
export const Tag = {
  FileMetaTransferSyntaxUID: '00020010',
  SpecificCharacterSet: '00080005',
  ImageType: '00080008',
  InstanceCreationDate: '00080012',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  SeriesDate: '00080021',
  ContentDate: '00080023',
  StudyTime: '00080030',
  SeriesTime: '00080031',
  AccessionNumber: '00080050',
  RetrieveURL: '00081190',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  SOPClassesInStudy: '00080062',
  InstanceAvailability: '00080056',
  TimezoneOffsetFromUTC: '00080201',
  ReferringPhysicianName: '00080090',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  InstitutionName: '00080080',
  Manufacturer: '00080070',
  FailedSOPSequence: '00081198',
  ReferencedSOPSequence: '00081199',
  ReferencedSOPClassUID: '00081150',
  ReferencedSOPInstanceUID: '00081155',
  FailureReason: '00081197',
  WarningReason: '00081196',
  PatientName: '00100010',
  PatientID: '00100020',
  IssuerOfPatientID: '00100021',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  PatientAge: '00101010',
  PatientComments: '00104000',
  OtherPatientIDs: '00101000',
  BodyPartExamined: '00180015',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  StudyID: '00200010',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfPatientRelatedStudies: '00201200',
  SamplesPerPixel: '00280002',
  PhotometricInterpretation: '00280004',
  PlanarConfiguration: '00280006',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  BitsAllocated: '00280100',
  BitsStored: '00280101',
  HighBit: '00280102',
  PixelRepresentation: '00280103',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
  RescaleIntercept: '00281052',
  RescaleSlope: '00281053',
  VOILUTFunction: '00281056',
  RedPaletteDescriptor: '00281101',
  GreenPaletteDescriptor: '00281102',
  BluePaletteDescriptor: '00281103',
  ICCProfile: '00282000',
  RedPaletteData: '00281201',
  GreenPaletteData: '00281202',
  BluePaletteData: '00281203',
  FrameVOILUTSequence: '00289132',
  PixelValueTransformationSequence: '00289145',
  SharedFunctionalGroups: '52009229',
  PerFrameFunctionalGroups: '52009230',
  PerformedProcedureStepStartDate: '00400244',
  PerformedProcedureStepStartTime: '00400245',
  RequestAttributesSequence: '00400275',
  ScheduledProcedureStepID: '00400009',
  RequestedProcedureID: '00401001',
  FloatPixelData: '7FE00008',
  DoubleFloatPixelData: '7FE00009',
  PixelData: '7FE00010',
} as const;

export type TagHex = string;

/** Attributes kept at study level (Patient, General Study, Patient Study modules): what QIDO study answers carry. */
export const STUDY_LEVEL_TAGS: readonly string[] = [
  Tag.SpecificCharacterSet,
  Tag.StudyDate,
  Tag.StudyTime,
  Tag.AccessionNumber,
  '00080051', // IssuerOfAccessionNumberSequence
  Tag.InstanceAvailability,
  Tag.TimezoneOffsetFromUTC,
  Tag.ReferringPhysicianName,
  '00080096', // ReferringPhysicianIdentificationSequence
  Tag.StudyDescription,
  '00081032', // ProcedureCodeSequence
  '00081060', // NameOfPhysiciansReadingStudy
  '00081080', // AdmittingDiagnosesDescription
  Tag.PatientName,
  Tag.PatientID,
  Tag.IssuerOfPatientID,
  '00100024', // IssuerOfPatientIDQualifiersSequence
  Tag.PatientBirthDate,
  '00100032', // PatientBirthTime
  Tag.PatientSex,
  Tag.OtherPatientIDs,
  '00101002', // OtherPatientIDsSequence
  '00101001', // OtherPatientNames
  Tag.PatientAge,
  '00101020', // PatientSize
  '00101030', // PatientWeight
  '00102160', // EthnicGroup
  '00102180', // Occupation
  '001021B0', // AdditionalPatientHistory
  Tag.PatientComments,
  Tag.StudyInstanceUID,
  Tag.StudyID,
  '00321032', // RequestingPhysician
  '00321060', // RequestedProcedureDescription
  '00120062', // PatientIdentityRemoved
  '00120063', // DeidentificationMethod
];

/** Attributes kept at series level (General Series, General Equipment essentials). */
export const SERIES_LEVEL_TAGS: readonly string[] = [
  Tag.SpecificCharacterSet,
  Tag.SeriesDate,
  Tag.SeriesTime,
  Tag.Modality,
  Tag.TimezoneOffsetFromUTC,
  Tag.Manufacturer,
  Tag.InstitutionName,
  '00081010', // StationName
  Tag.SeriesDescription,
  '0008103F', // SeriesDescriptionCodeSequence
  '00081050', // PerformingPhysicianName
  '00081070', // OperatorsName
  '00081090', // ManufacturerModelName
  Tag.BodyPartExamined,
  '00185100', // PatientPosition
  '00181030', // ProtocolName
  Tag.SeriesInstanceUID,
  Tag.SeriesNumber,
  '00200060', // Laterality
  '00201040', // PositionReferenceIndicator
  Tag.PerformedProcedureStepStartDate,
  Tag.PerformedProcedureStepStartTime,
  '00400253', // PerformedProcedureStepID
  '00400254', // PerformedProcedureStepDescription
  Tag.RequestAttributesSequence,
];

/** Binary value representations: their values go out as bulk data (or InlineBinary when tiny). */
export const BINARY_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);

/** Formats '7FE00010' as '(7FE0,0010)' for messages. */
export function formatTag(tag: string): string {
  return `(${tag.slice(0, 4)},${tag.slice(4)})`;
}
