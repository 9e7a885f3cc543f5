import { useCallback, useEffect, useState } from 'react';
import {
  streamedDownload,
  sharedDownload,
  dicomDate,
  dicomwebRoot,
  shareError,
  shareRoot,
  getJson,
  projectRoles,
  roleAtLeast,
  tagText,
  Tags,
  UserFacingError,
  type DicomJson,
} from '../api';
import { ErrorPanel, Thumbnail, useLoad } from '../components';

/** One study: its key attributes, its series with previews and instance counts, and a ZIP download. */
export function StudyPage({
  project,
  study,
  share,
  viewer,
}: {
  project?: string;
  study: string;
  share?: string;
  viewer?: boolean;
}) {
  const root = share ? shareRoot(share) : dicomwebRoot(project);
  const base = `${root}/studies/${encodeURIComponent(study)}`;
  const { data, error, loading } = useLoad(async () => {
    const q = new URLSearchParams({ StudyInstanceUID: study });
    q.set(
      'includefield',
      `${Tags.NumberOfStudyRelatedSeries},${Tags.NumberOfStudyRelatedInstances},${Tags.ReferringPhysicianName}`,
    );
    const [found, series] = await Promise.all([
      getJson<DicomJson[]>(`${root}/studies?${q.toString()}`, 'application/dicom+json'),
      getJson<DicomJson[]>(
        `${base}/series?includefield=${Tags.NumberOfSeriesRelatedInstances}`,
        'application/dicom+json',
      ),
    ]);
    return { attrs: found[0], series };
  }, [root, study]);
  // Share links are for curators and up: readers get no link to a page that would refuse them.
  const [canShare, setCanShare] = useState(false);
  useEffect(() => {
    if (!project || share) return;
    let live = true;
    projectRoles(project)
      .then((roles) => live && setCanShare(roleAtLeast(roles, 'curator')))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [project, share]);
  const [downloading, setDownloading] = useState(false);
  const [downloadError, setDownloadError] = useState<unknown>();
  // A share link can be revoked or expire while this page is open; its ZIP goes to the browser's download manager,
  // which shows a failure without words. So the page asks the gateway whether the link still opens this study:
  // before a download, twice shortly after it started, and whenever the person comes back to the tab.
  const [shareGone, setShareGone] = useState<unknown>();
  const checkShare = useCallback(async (): Promise<boolean> => {
    if (!share) return true;
    try {
      const q = new URLSearchParams({ StudyInstanceUID: study, limit: '1' });
      const found = await getJson<DicomJson[]>(`${root}/studies?${q.toString()}`, 'application/dicom+json');
      if (found.length > 0) return true;
      setShareGone(shareError(new UserFacingError(404, 'Not found.', '')));
    } catch (err) {
      const shown = shareError(err);
      // Only a refusal of the link itself means it is gone; a gateway that cannot be reached says so on its own.
      if (shown === err) return true;
      setShareGone(shown);
    }
    return false;
  }, [share, root, study]);
  useEffect(() => {
    if (!share) return;
    const recheck = () => {
      if (document.visibilityState === 'visible') void checkShare();
    };
    window.addEventListener('focus', recheck);
    document.addEventListener('visibilitychange', recheck);
    return () => {
      window.removeEventListener('focus', recheck);
      document.removeEventListener('visibilitychange', recheck);
    };
  }, [share, checkShare]);

  const download = async () => {
    setDownloading(true);
    setDownloadError(undefined);
    try {
      if (!share) {
        // Streamed by the gateway to the browser's download manager through a single-use link.
        await streamedDownload(base, `${study}.zip`);
      } else if (await checkShare()) {
        // Streamed too: the share link is the credential, nothing is assembled in page memory.
        sharedDownload(base, `${study}.zip`);
        // A revocation between the check and the download manager's request shows up here, in words.
        for (const ms of [2_000, 10_000]) setTimeout(() => void checkShare(), ms);
      }
    } catch (err) {
      setDownloadError(err);
    } finally {
      setDownloading(false);
    }
  };

  if (error !== undefined) return <ErrorPanel error={share ? shareError(error) : error} />;
  if (loading || !data) return <p className="muted">Loading…</p>;
  if (!data.attrs) {
    return (
      <ErrorPanel
        error={
          new UserFacingError(
            404,
            'Not found.',
            'This study does not exist, or it is not in a project you can see. Check the link or ask for access.',
          )
        }
      />
    );
  }
  const a = data.attrs;
  const row = (label: string, value: string) => (
    <tr>
      <th>{label}</th>
      <td>{value}</td>
    </tr>
  );
  return (
    <section>
      <h1>{tagText(a, Tags.StudyDescription) || 'Study'}</h1>
      <table className="attrs" id="study-attributes">
        <tbody>
          {row('Patient', tagText(a, Tags.PatientName))}
          {row('Patient ID', tagText(a, Tags.PatientID))}
          {row('Study date', dicomDate(tagText(a, Tags.StudyDate)))}
          {row('Accession', tagText(a, Tags.AccessionNumber))}
          {row('Referring physician', tagText(a, Tags.ReferringPhysicianName))}
          {row('Series', tagText(a, Tags.NumberOfStudyRelatedSeries))}
          {row('Instances', tagText(a, Tags.NumberOfStudyRelatedInstances))}
          {row('Study Instance UID', study)}
        </tbody>
      </table>
      {shareGone !== undefined && (
        <div id="share-gone">
          <ErrorPanel error={shareGone} />
          <p>
            If a download of this study was running, it stopped or will fail in your browser&apos;s downloads:
            a file it left there is incomplete. Ask the person who shared the study for a new link and
            download it again.
          </p>
        </div>
      )}
      <p>
        <button
          id="download-zip"
          onClick={() => void download()}
          disabled={downloading || shareGone !== undefined}
        >
          {downloading ? 'Preparing the ZIP…' : 'Download as ZIP'}
        </button>{' '}
        {project && !share && viewer && (
          <>
            {/* Same tab: the viewer reads this tab's session (sessionStorage) for its token. */}
            <a
              href={`/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(study)}&project=${encodeURIComponent(project)}`}
              id="open-viewer"
            >
              Open in the viewer
            </a>{' '}
          </>
        )}
        {project && !share && canShare && (
          <a href={`#/p/${encodeURIComponent(project)}/shares/${study}`} id="share-study">
            Share this study
          </a>
        )}
      </p>
      {downloadError !== undefined && <ErrorPanel error={downloadError} />}
      <h2>Series</h2>
      <table id="series">
        <thead>
          <tr>
            <th />
            <th className="num">Number</th>
            <th>Modality</th>
            <th>Description</th>
            <th>Body part</th>
            <th className="num">Instances</th>
          </tr>
        </thead>
        <tbody>
          {data.series.map((s) => {
            const uid = tagText(s, Tags.SeriesInstanceUID);
            return (
              <tr key={uid} data-series={uid}>
                <td>
                  <Thumbnail path={`${base}/series/${uid}/thumbnail`} label="Series preview" />
                </td>
                <td className="num">{tagText(s, Tags.SeriesNumber)}</td>
                <td>{tagText(s, Tags.Modality)}</td>
                <td>{tagText(s, Tags.SeriesDescription)}</td>
                <td>{tagText(s, Tags.BodyPartExamined)}</td>
                <td className="num" data-col="instances">
                  {tagText(s, Tags.NumberOfSeriesRelatedInstances)}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
